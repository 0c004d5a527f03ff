"""Prove reruns are identical: run the pipeline twice from clean outputs and compare.

    python -m pipeline.devtools.verify_repro [--profile tiny] [--keep]

Each run happens in its own fresh copy of the project (git's view of it: no outputs, no
DVC cache, no run cache, its own MLflow store), with the profile applied. The check fails
unless every metrics/*.json is identical byte for byte; it prints each file compared.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.devtools import workspace


def run_copy(dest: Path, profile: str, seed: int | None = None) -> Path:
    """Run ``dvc repro`` in a fresh copy at ``dest`` with ``profile`` applied (and ``seed``
    in params.yaml when given); the copy's metrics folder."""
    workspace.copy_project(dest)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PIPELINE_ROOT"] = str(dest)
    if profile != "default":  # default: params.yaml as committed
        subprocess.run(
            [sys.executable, "-m", "pipeline.devtools.profile", profile],
            cwd=dest,
            env=env,
            check=True,
        )
        workspace.commit_all(dest, f"profile {profile}")
    if seed is not None:
        params = dest / "params.yaml"
        text, count = re.subn(r"(?m)^seed: *\d+", f"seed: {seed}", params.read_text(), count=1)
        if count != 1:
            raise ValueError(f"{params}: no top-level 'seed:' line to set")
        params.write_text(text)
        workspace.commit_all(dest, f"seed {seed}")
    start = time.perf_counter()
    dvc = Path(sys.executable).with_name("dvc")  # the copy's stages find .venv via bin/python
    subprocess.run([str(dvc), "repro"], cwd=dest, env=env, check=True)
    print(f"verify-repro: {dest.name}: dvc repro took {time.perf_counter() - start:.0f} s")
    return dest / "metrics"


def compare(a: Path, b: Path) -> list[str]:
    """Names of the metrics files that differ (or exist on one side only)."""
    names = sorted({p.name for p in a.glob("*.json")} | {p.name for p in b.glob("*.json")})
    if not names:
        return ["no metrics files were written"]
    bad = []
    for name in names:
        fa, fb = a / name, b / name
        same = fa.is_file() and fb.is_file() and fa.read_bytes() == fb.read_bytes()
        print(f"  {'identical' if same else 'DIFFERENT'}  metrics/{name}")
        if not same:
            bad.append(name)
            if fa.is_file() and fb.is_file():
                diff = difflib.unified_diff(
                    fa.read_text().splitlines(), fb.read_text().splitlines(), "run1", "run2", n=0
                )
                print("\n".join(f"      {line}" for line in diff))
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--profile", default="tiny", help="profiles/<name>.yaml, or default (params.yaml as is)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the two copies")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="verify-repro-"))
    try:
        first = run_copy(tmp / "run1", args.profile)
        second = run_copy(tmp / "run2", args.profile)
        print(f"verify-repro: comparing {first} and {second}")
        bad = compare(first, second)
    except subprocess.CalledProcessError as exc:
        print(f"verify-repro: error: {' '.join(map(str, exc.cmd))} failed", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"verify-repro: copies kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if bad:
        print(f"verify-repro: FAILED: {len(bad)} metrics file(s) differ", file=sys.stderr)
        return 1
    print("verify-repro: OK: every metrics file is identical byte for byte")
    return 0


if __name__ == "__main__":
    sys.exit(main())
