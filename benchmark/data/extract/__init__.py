"""Task files from the raw MIMIC databases (``ehrbench data build``), by the reference pipelines' rules.

One concept per module: ``tables`` (raw CSVs found and read), ``steps`` (resumable steps, attrition),
``cohort`` (which ICU stays), ``dates`` (dates out of order), ``phenotypes`` (CCS labels), ``validate`` (event ids), ``variables``
(itemids, unit and range cleaning), ``events`` (streamed event tables), ``episodes`` (the series
files), ``notes`` (the first notes of a stay), ``listfiles`` (the task's split files), ``summary``
(the build against the paper's totals), ``peak`` (a step's peak memory) and ``mimic3`` (the MIMIC-III build, step by step).
MIMIC-IV: ``shared_steps`` (step bodies both builds share), ``icd10`` (ICD-10-CM codes to CCS groups
through the CMS GEM), ``discharge`` (the past medical history of a discharge summary), ``cxr`` (AP
chest X-ray studies and CheXpert labels), ``tvtset`` (the patient split), ``mimic4_listfiles`` and
``mimic4`` (the MIMIC-IV build, step by step).
"""
