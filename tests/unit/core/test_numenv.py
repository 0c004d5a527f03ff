"""The numeric-environment probe (pipeline/core/numenv.py): its fields, its fingerprint, and
that probing imports neither TensorFlow nor mlflow."""

from __future__ import annotations

import json
import subprocess
import sys

from pipeline.core import numenv

FIELDS = {
    "cpu_model",
    "cpu_isa",
    "cpus",
    "blas",
    "blas_kernel",
    "blas_threads",
    "onednn",
    "onednn_isa",
    "threads",
    "python",
    "numpy",
    "tensorflow",
    "keras",
    "fingerprint",
}


def test_probe_has_every_field_from_this_machine():
    env = numenv.probe()
    assert set(env) == FIELDS
    assert all(isinstance(v, str) and v for v in env.values())
    assert env["blas"].startswith("openblas")  # NumPy's wheel bundles OpenBLAS
    assert env["blas_kernel"] not in ("unknown", "none")
    assert env["numpy"] == __import__("numpy").__version__
    assert int(env["cpus"]) >= 1
    assert len(env["fingerprint"]) == 12


def test_fingerprint_is_stable_within_a_process():
    assert numenv.probe()["fingerprint"] == numenv.probe()["fingerprint"]
    env = numenv.probe()
    assert numenv.fingerprint(env) == env["fingerprint"]


def test_fingerprint_changes_with_onednn_and_thread_variables():
    base = numenv.probe(environ={})
    off = numenv.probe(environ={"TF_ENABLE_ONEDNN_OPTS": "0"})
    one = numenv.probe(environ={"OMP_NUM_THREADS": "1"})
    assert off["onednn"] == "off" and off["fingerprint"] != base["fingerprint"]
    assert numenv.differences(base, off) == ["onednn"]
    assert one["threads"] == "OMP_NUM_THREADS=1" and one["fingerprint"] != base["fingerprint"]
    # a field that does not change numbers leaves the fingerprint alone
    renamed = dict(base, cpu_model="another CPU")
    assert numenv.fingerprint(renamed) == base["fingerprint"]
    assert numenv.fingerprint(dict(base, blas_kernel="Haswell")) != base["fingerprint"]


def test_onednn_default_follows_tensorflow():
    assert numenv.onednn_state({}, machine="x86_64", system="Linux") == "on"
    assert numenv.onednn_state({}, machine="arm64", system="Darwin") == "off"
    assert numenv.onednn_state({"TF_ENABLE_ONEDNN_OPTS": "1"}, "arm64", "Darwin") == "on"
    assert numenv.onednn_state({"TF_ENABLE_ONEDNN_OPTS": "false"}, "x86_64", "Linux") == "off"


def test_cpuinfo_flags_give_the_isa(tmp_path):
    info = tmp_path / "cpuinfo"
    flags = "fpu sse4_1 avx avx2 avx512f avx512bw avx512vl avx512dq amx_tile amx_bf16 amx_int8"
    info.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n")
    model, found = numenv.cpu_info(info)
    assert model == "Test CPU"
    assert numenv.isa_names(found) == ["avx2", "avx512f", "amx"]
    assert numenv.onednn_isa(found, {}) == "avx512_core_amx"
    assert numenv.onednn_isa({"avx", "avx2", "sse4_1"}, {}) == "avx2"
    assert numenv.onednn_isa(found, {"ONEDNN_MAX_CPU_ISA": "AVX2"}) == "avx2"
    env = numenv.probe(environ={}, cpuinfo=info)
    assert env["cpu_model"] == "Test CPU" and env["cpu_isa"] == "avx2 avx512f amx"
    assert numenv.cpu_info(tmp_path / "missing") == ("unknown", set())


def test_tags_round_trip_and_sidecar(tmp_path):
    env = numenv.probe()
    tags = numenv.as_tags(env)
    assert all(k.startswith("env.") for k in tags)
    assert numenv.from_tags(tags | {"preset": "x"}) == env
    path = tmp_path / "m.env.json"
    numenv.write(path, env)
    assert numenv.read(path) == env
    assert path.read_text() == json.dumps(env, indent=2, sort_keys=True) + "\n"
    (tmp_path / "bad.json").write_text("[1]")
    for bad in (tmp_path / "bad.json", tmp_path / "none.json"):
        try:
            numenv.read(bad)
        except ValueError as exc:
            assert str(bad) in str(exc)
        else:
            raise AssertionError(f"{bad} was accepted")


def test_probe_imports_neither_tensorflow_nor_mlflow():
    code = (
        "import sys, json; from pipeline.core import numenv; env = numenv.probe(); "
        "print(json.dumps([m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
