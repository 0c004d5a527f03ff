"""Model files that cannot be swapped (#28): the sha256 of every file of a logged model is
recorded on the run, the logged model and the registered version; the project's loaders
(``models.family.load_verified`` and ``python -m pipeline.predict``) refuse a model whose weights
or logged code were changed afterwards, in one line naming the file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from PIL import Image

from pipeline import tracking
from pipeline.core.params import ConvSpec, DenseSpec, FlattenSpec
from pipeline.models import family as families
from pipeline.models.numpy_cnn import family
from pipeline.models.numpy_cnn.network import Network
from tests.helpers import REPO, empty_store, plain_env

TINY = (ConvSpec(filters=2, kernel=3), FlattenSpec(), DenseSpec(units=3, activation="softmax"))


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A scratch model logged and registered as ``tiny`` in a store of its own."""
    root = tmp_path_factory.mktemp("digests")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        empty_store(root)
        tracking.setup("digests", root=root)
        net = Network(TINY, (28, 28, 1), seed=0)
        net.save(root / "model.npz")
        with mlflow.start_run(tags={"preset": "tiny"}) as run:
            family.log_model(net, root, np.zeros((1, 28, 28, 1), np.float32))
            version = tracking.register_model("tiny", "none", root)
        yield root, uri, run.info.run_id, version


def artifact(root: Path, suffix: str) -> Path:
    """The stored copy of a logged model's file (the store's artifact folder)."""
    found = [p for p in (root / "mlartifacts").rglob("*") if p.as_posix().endswith(suffix)]
    assert len(found) == 1, found
    return found[0]


def test_digests_are_on_the_run_and_the_version(logged, monkeypatch):
    _root, uri, run_id, version = logged
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = mlflow.MlflowClient(uri)
    run_tag = client.get_run(run_id).data.tags["model_sha256.tiny"]
    assert client.get_model_version("tiny", version).tags["model_sha256"] == run_tag
    recorded = mlflow.artifacts.load_dict(f"runs:/{run_id}/tiny.sha256.json")
    assert any(k.startswith("code/pipeline/") for k in recorded)
    assert any(k.endswith("model.npz") for k in recorded)
    for ref in (f"runs:/{run_id}/tiny", f"models:/tiny/{version}"):
        fam, model = families.load_verified(ref)
        assert fam.predict_proba(model, np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 3)


def _predict(uri: str, run_id: str, picture: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.predict", "--model", f"runs:/{run_id}/tiny"]
    env = plain_env(MLFLOW_TRACKING_URI=uri)
    return subprocess.run([*cmd, str(picture)], cwd=REPO, env=env, capture_output=True,
                          text=True, check=False)  # fmt: skip


@pytest.mark.slow  # three runs of python -m pipeline.predict
@pytest.mark.parametrize(
    "suffix", ["model.npz", "code/pipeline/models/numpy_cnn/flavor.py"], ids=["weights", "code"]
)
def test_a_changed_file_is_refused_by_predict_and_load_verified(logged, monkeypatch, suffix):
    root, uri, run_id, version = logged
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    stored = artifact(root, suffix)
    kept = stored.parent / (stored.name + ".kept")
    shutil.copy2(stored, kept)
    picture = root / "digit.png"
    pixels = np.zeros((28, 28), np.uint8)
    pixels[5:23, 12:16] = 255  # a "1"
    Image.fromarray(pixels).save(picture)
    try:
        with stored.open("ab") as f:
            f.write(b"\nimport os  # planted\n")
        rel = suffix if suffix.startswith("code/") else "model.npz"
        for ref in (f"runs:/{run_id}/tiny", f"models:/tiny/{version}"):
            with pytest.raises(tracking.ModelTampered, match=f"{rel} differs from the sha256"):
                families.load_verified(ref)
        proc = _predict(uri, run_id, picture)
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and rel in lines[0] and "refused" in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        shutil.move(kept, stored)
    assert _predict(uri, run_id, picture).returncode == 0


def test_a_planted_file_is_refused(logged, monkeypatch):
    root, uri, run_id, _ = logged
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    planted = artifact(root, "MLmodel").parent / "data" / "custom_objects.cloudpickle"
    planted.parent.mkdir(exist_ok=True)
    planted.write_bytes(b"not a pickle")
    try:
        with pytest.raises(tracking.ModelTampered, match="was added after logging"):
            families.load_verified(f"runs:/{run_id}/tiny")
    finally:
        planted.unlink()


def test_python_caches_written_beside_the_code_are_not_tampering(logged, monkeypatch):
    """``mlflow models serve`` on a local store imports the model's ``code/`` in place and
    Python writes ``__pycache__`` there: the model still loads; any other added file does not."""
    root, uri, run_id, _ = logged
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    code = artifact(root, "code/pipeline/models/numpy_cnn/flavor.py").parent
    cache = code / "__pycache__" / "flavor.cpython-311.pyc"
    cache.parent.mkdir()
    cache.write_bytes(b"bytecode")
    stray = code / "__pycache__" / "notes.txt"
    try:
        fam, _ = families.load_verified(f"runs:/{run_id}/tiny")
        assert fam is family
        stray.write_text("not a cache")
        with pytest.raises(tracking.ModelTampered, match=r"notes\.txt was added after logging"):
            families.load_verified(f"runs:/{run_id}/tiny")
    finally:
        shutil.rmtree(cache.parent)
