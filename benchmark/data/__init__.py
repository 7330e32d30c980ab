"""The harness's data: task files on disk -> discretised series + encoded notes -> a fingerprinted tensor cache.

Modules, one concept each: ``loaders`` (the on-disk layouts of the real pipelines), ``timeseries``
(Harutyunyan's discretiser and normaliser), ``notes`` (the frozen note encoder), ``generator`` (synthetic
tasks written in the real layouts), ``note_lengths`` (their notes' length laws), ``cache`` (the tensor cache), ``split`` (a materialised split and its
batches), ``taskdata`` (``materialise``: a task's files to its cached arrays), ``describe`` (a task's
statistics), ``vendored`` (tasks whose raw tables ship with the project), ``evidence`` (the under-coding
noise's evidence per training stay and label, cached; never a method's) and the packages ``extract``
(``ehrbench data build``: task files from the raw MIMIC tables) and ``rawgen`` (``ehrbench data raw``: a
synthetic task as the raw tables it would be built from). A method never imports this package:
it sees only ``TaskInfo``, batches and noisy labels.

The names below are imported on first use, so that ``extract`` (pandas only) runs without loading torch.
"""
__all__ = ["Split", "TaskData", "cache_key", "check_source", "data_root", "materialise", "prepare", "series_arrays",
           "synthetic_files"]


def __getattr__(name: str):
    if name == "Split":
        from .split import Split

        return Split
    if name in __all__:
        from . import taskdata

        return getattr(taskdata, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
