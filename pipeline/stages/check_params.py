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

from pipeline.core import config, runner
from pipeline.core.io import atomic_write
from pipeline.core.params import Params

STAMP = "params.yaml passed check_params\n"


def main(argv: list[str] | None = None) -> int:
    def body(params: Params) -> str:
        atomic_write(config.params_check_file(), STAMP)
        n = len(params.models)
        return f"params.yaml is valid ({len(params.datasets)} datasets, {n} models)"

    return runner.run_stage("check_params", body, argv)


if __name__ == "__main__":
    sys.exit(main())
