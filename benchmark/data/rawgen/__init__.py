"""Raw database tables from the generator: a synthetic task written as the MIMIC tables it would be
built from, so that ``ehrbench data build`` can be tested end to end against known truth.

One concept per module: ``schema`` (the tables' columns, a CSV writer), ``stays`` (patients,
admissions, ICU stays, transfers), ``items`` (the 17 variables as itemids and raw spellings; what
MIMIC-IV can chart), ``charting`` (chart, lab and output events, chart times), ``diagnoses``
(phenotypes as ICD-9 or ICD-10 codes), ``noteevents`` (MIMIC-III's notes), ``discharge`` (MIMIC-IV-Note's
discharge summaries), ``cxr`` (MIMIC-CXR-JPG's studies and CheXpert labels), ``volume`` (what is
written beyond the task), ``bulk`` (rows up to a share of MIMIC-III's size), ``compare`` (what 'equal'
means between the generator's task files and the built ones), ``mimic3`` and ``mimic4`` (the tables of
a task, ``ehrbench data raw mimic3`` and ``ehrbench data raw mimic4``).
"""
