"""The harness's data: task files on disk -> discretised series + encoded notes -> a fingerprinted tensor cache.

Modules, one concept each: ``loaders`` (the on-disk layouts of the real pipelines), ``timeseries``
(Harutyunyan's discretiser and normaliser), ``notes`` (the frozen note encoder), ``generator`` (synthetic
tasks written in the real layouts), ``cache`` (the tensor cache), ``split`` (a materialised split and its
batches), ``taskdata`` (``materialise``: a task's files to its cached arrays) and ``describe`` (a task's
statistics). A method never imports this package: it sees only ``TaskInfo``, batches and noisy labels.
"""
from .split import Split
from .taskdata import TaskData, cache_key, check_source, data_root, materialise, series_arrays, synthetic_files

__all__ = ["Split", "TaskData", "cache_key", "check_source", "data_root", "materialise", "series_arrays",
           "synthetic_files"]
