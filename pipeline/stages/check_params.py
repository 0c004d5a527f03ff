"""check_params: params.yaml -> reports/params_ok.txt, the first stage of the pipeline.

DVC deletes a stage's outputs before it runs the stage's command, so a stage that refuses
a bad param would cost the previous ``models/<m>`` or ``data/prepared/<ds>`` (until
``dvc checkout``). Every stage depends on this stage's stamp instead: the whole params file
is checked here (types, ranges, links between sections such as ``models.<m>.dataset``,
layer sizes against the image size) before any other stage's outputs are touched. The
stamp's content is constant, so a param change reruns only the stages that read it,
and DVC's run cache still restores earlier results (measured against ``persist: true``
outputs, which DVC leaves out of the run cache; README, "Safety and failure behaviour").
"""

from __future__ import annotations

import sys

import numpy as np

from pipeline.core import config, runner
from pipeline.core.io import atomic_write
from pipeline.core.params import Params, ParamsError

STAMP = "params.yaml passed check_params\n"


def _shown(path) -> str:
    try:
        return str(path.relative_to(config.ROOT))
    except ValueError:
        return str(path)


def check_train_sizes(params: Params, root=config.ROOT) -> str:
    """Each dataset's ``train_size`` against the training images of its classes: counted
    in the raw labels file when fetch has written it (not a DVC dep: fetch runs after this
    stage), else against ``validate.rows.train.max``. What was checked, in a few words."""
    labels_file = config.raw_dir(params.data.source, root) / config.RAW_FILES[1]
    counts = None
    try:
        with labels_file.open("rb") as f:
            if f.read(4) == b"\x00\x00\x08\x01":  # an IDX labels file; else validate says
                f.seek(8)
                counts = np.bincount(np.frombuffer(f.read(), dtype=np.uint8), minlength=256)
    except OSError:
        pass
    for name, ds in params.datasets.items():
        if ds.train_size is None:
            continue
        if counts is not None:
            have = int(sum(counts[c] for c in ds.classes))
            where = f"of classes {list(ds.classes)} in {_shown(labels_file)}"
        else:
            have = params.validate.rows["train"].max
            where = "at most (validate.rows.train.max; data not fetched yet)"
        if ds.train_size > have:
            raise ParamsError(
                f"datasets.{name}.train_size: {ds.train_size} exceeds the {have} training "
                f"images {where}"
            )
    return "train_size checked against " + (
        "the raw labels" if counts is not None else "validate.rows (data not fetched yet)"
    )


def clean_up_killed(params: Params) -> str:
    """After a stage killed by SIGKILL (its marker left in reports/running/, which this
    stage depends on, so the next `dvc repro` runs this stage even when DVC restores the
    killed stage's outputs from its run cache): mark KILLED the MLflow runs whose process
    is gone and remove the markers. Hidden temporaries were removed by the runner
    (``clean_up``). Best effort: a store that cannot be reached keeps the markers."""
    stale = runner.stale_markers()
    if not stale:
        return ""
    names = ", ".join(m.name for m in stale)
    try:
        from pipeline import tracking

        tracking.setup(params.mlflow.experiment)
        killed = tracking.kill_orphan_runs()
    except Exception as exc:  # the check itself must not fail on the store
        print(f"check_params: warning: runs of killed stages ({names}) not closed: {exc}",
              file=sys.stderr)  # fmt: skip
        return ""
    for marker in stale:
        marker.unlink(missing_ok=True)
    return f"; cleaned up after killed stage(s) {names} ({len(killed)} run(s) marked KILLED)"


def main(argv: list[str] | None = None) -> int:
    def body(params: Params) -> str:
        killed = clean_up_killed(params)
        sizes = check_train_sizes(params)
        atomic_write(config.params_check_file(), STAMP)
        n = len(params.models)
        return (
            f"params.yaml is valid ({len(params.datasets)} datasets, {n} models; {sizes}){killed}"
        )

    return runner.run_stage("check_params", body, argv)


if __name__ == "__main__":
    sys.exit(main())
