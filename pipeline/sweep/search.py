"""The searcher and the scheduler. Module-level classes: ``Tuner.restore`` unpickles them."""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from pipeline.core.params import SweepParams
from pipeline.sweep.spec import TRIAL_INDEX


class IndexedOptunaSearch(OptunaSearch):
    """OptunaSearch that puts the Optuna trial number in each config as ``trial_index``
    (the per-trial seed comes from it; the counter lives in the study, so it goes on after
    ``Tuner.restore``), and tells Optuna FAIL for a trial that reported ``trial_error``
    (plain OptunaSearch tells NaN, which Optuna 5 refuses)."""

    def suggest(self, trial_id):
        cfg = super().suggest(trial_id)
        if cfg is not None:
            cfg[TRIAL_INDEX] = self._ot_trials[trial_id].number
        return cfg

    def on_trial_complete(self, trial_id, result=None, error=False):
        if result and result.get("trial_error"):
            result, error = None, True
        return super().on_trial_complete(trial_id, result=result, error=error)


def make_searcher(sw: SweepParams, points: list[dict] | None = None) -> IndexedOptunaSearch:
    """TPE seeded from the sweep's seed: the same params propose the same configurations
    (all of them with one trial at a time; with more, the first 10 are fixed and later ones
    depend on which trials finished first)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return IndexedOptunaSearch(
        points_to_evaluate=points, sampler=optuna.samplers.TPESampler(seed=sw.seed)
    )


def make_scheduler(sw: SweepParams, epochs: int) -> ASHAScheduler | FIFOScheduler:
    if sw.asha is None:
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=epochs,
        grace_period=min(sw.asha.grace_period, epochs),
        reduction_factor=sw.asha.reduction_factor,
    )
