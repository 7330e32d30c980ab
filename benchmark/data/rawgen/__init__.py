"""Raw database tables from the generator: a synthetic task written as the MIMIC tables it would be
built from, so that ``ehrbench data build`` can be tested end to end against known truth.

One concept per module: ``schema`` (the tables' columns, a CSV writer), ``stays`` (patients,
admissions, ICU stays, transfers), ``items`` (the 17 variables as itemids and raw spellings),
``charting`` (chart and lab events, chart times), ``diagnoses`` (phenotypes as ICD-9 codes),
``noteevents`` (notes), ``volume`` (what is written beyond the task), ``bulk`` (rows up to a share of
MIMIC-III's size), ``compare`` (what 'equal' means between the generator's task files and the built
ones) and ``mimic3`` (the MIMIC-III tables of a task, ``ehrbench data raw mimic3``).
"""
