"""Noisy EHR Bench: learning under label noise on multimodal, multi-label EHR.

One run, step by step (``ehrbench bench`` -> a record under ``results/``):

1. ``cli``            parses the request; ``options.Execution`` holds every execution switch, resolved once.
2. ``runner.plan``    validates every name first (``protocol`` tracks and noise settings, ``cards`` for the
                      tasks of ``datasets/``, ``registry`` for ``methods/``), then expands the grid into
                      specs; a spec's hash is its run id (``records.run_id``).
3. ``executors``      decides where the runs execute (this process, one worker per GPU, Slurm); each run
                      is ``runner.run_one`` under a claim (``records.claimed``), so a run is done once.
4. ``data``           materialises the task once per process: files (real, or written by
                      ``data.generator``) -> ``data.loaders`` -> ``data.timeseries`` + ``data.notes`` ->
                      a fingerprinted ``data.cache.TensorCache``.
5. ``noise``          flips the training labels (checksummed); the test labels stay clean.
6. ``method``         the submission (``methods/<name>/``, a private package) builds its model (FlexCare
                      from ``backbones`` by default) and its loss and epoch hooks.
7. ``trainer.train``  the protocol on one screen: seeding, Adam + cosine per epoch, reshuffled batches of
                      128, the loss, the hooks, clean-test evaluation (``metrics``) every epoch, the last
                      epoch kept; ``fastpath`` executes each step (autocast, ``graphs``, compile, layouts),
                      ``packing`` lets runs share a GPU, ``diagnostics`` scores a method's corrections
                      against the clean labels it never sees.
8. ``records``        writes the record atomically (spec, metrics and curve, timings, ``environment``,
                      fingerprints); ``leaderboard`` (a package of its own, no torch) reads records only.
                      ``marks`` (no torch) is read by both: whether a run collapsed, a record's FlexCare
                      fusion layout.
"""
__version__ = "0.7.0"
