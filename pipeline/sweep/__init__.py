"""Hyperparameter sweeps (``sweeps:`` in params.yaml) on Ray Tune with Optuna and ASHA.

``python -m pipeline.sweep NAME [--trials N] [--resume] [--apply]``. Each trial is the
preset's own ``family.train`` on ``data/prepared/<dataset>/`` with the ``space`` keys set;
the driver logs one MLflow parent run and a child run per trial (pipeline/tracking/sweeps.py).

- spec.py: the space as Ray Tune distributions, the ``dvc exp run -S`` line of a config.
- search.py: the Optuna searcher (seeded; the trial index goes into each config) and ASHA.
- trial.py: the trainable that runs in a Ray worker.
- runtime.py: starting or joining Ray, where Tune keeps its state.
- run.py: the driver; bench.py: ``make bench-sweep``.
"""
