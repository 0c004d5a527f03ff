"""Developer tooling: benchmarks, the profile switcher, the reproducibility check, the PR
report and the offline template of `dvc plots`. No stage imports it."""
