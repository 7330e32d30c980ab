"""Task files from the raw MIMIC databases (``ehrbench data build``), by the reference pipelines' rules.

One concept per module: ``tables`` (raw CSVs found and read), ``steps`` (resumable steps, attrition),
``cohort`` (which ICU stays), ``phenotypes`` (CCS labels), ``validate`` (event ids), ``variables``
(itemids, unit and range cleaning), ``events`` (streamed event tables), ``episodes`` (the series
files), ``notes`` (the first notes of a stay), ``listfiles`` (the task's split files), ``summary``
(the build against the paper's totals), ``peak`` (a step's peak memory) and ``mimic3`` (the MIMIC-III
build, step by step).
"""
