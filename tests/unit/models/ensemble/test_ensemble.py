"""The ensemble family (pipeline/models/ensemble/family.py) and its params: TTA views, the
weights fitted on validation, the saved folder, and the one-line refusals of bad params."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from pipeline.core import params as params_mod
from pipeline.core.io import BadModelFile
from pipeline.core.params import DenseSpec, FlattenSpec
from pipeline.data.prepared import Split
from pipeline.models.ensemble import family as ens
from pipeline.models.numpy_cnn.network import Network
from tests.helpers import params_spec


def test_tta_views_are_exact_one_pixel_shifts():
    x = np.arange(1, 10, dtype=np.float32).reshape(1, 3, 3, 1)
    views = [v[0, :, :, 0] for v in ens.shifted_views(x, 1)]
    assert len(views) == 5
    np.testing.assert_array_equal(views[0], [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    np.testing.assert_array_equal(views[1], [[0, 0, 0], [1, 2, 3], [4, 5, 6]])  # down
    np.testing.assert_array_equal(views[2], [[4, 5, 6], [7, 8, 9], [0, 0, 0]])  # up
    np.testing.assert_array_equal(views[3], [[0, 1, 2], [0, 4, 5], [0, 7, 8]])  # right
    np.testing.assert_array_equal(views[4], [[2, 3, 0], [5, 6, 0], [8, 9, 0]])  # left
    assert len(ens.shifted_views(x, 0)) == 1


def test_weights_fitted_on_validation_favour_the_right_member():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    good = np.full((300, 3), 0.1)
    good[np.arange(300), y] = 0.8  # right, confident
    noise = rng.dirichlet(np.ones(3), 300)  # uninformed
    probas = np.stack([noise, good])
    w = ens.fit_weights(probas, y)
    assert w.sum() == pytest.approx(1) and w[1] > 0.9
    mean = ens.log_loss(ens.combine(probas, np.full(2, 0.5)), y)
    assert ens.log_loss(ens.combine(probas, w), y) < mean
    np.testing.assert_array_equal(w, ens.fit_weights(probas, y))  # deterministic


def _member(folder, seed):
    arch = (FlattenSpec(), DenseSpec(units=3, activation="softmax"))
    folder.mkdir(parents=True)
    Network(arch, (28, 28, 1), seed=seed).save(folder / "model.npz")


def test_train_saves_a_self_contained_folder_that_loads_back(tmp_path):
    models = tmp_path / "models"
    _member(models / "a", 1)
    _member(models / "b", 2)
    rng = np.random.default_rng(0)
    split = Split(rng.random((40, 28, 28, 1), dtype=np.float32), rng.integers(0, 3, 40))
    mp = params_mod.EnsembleParams(
        family="ensemble", dataset="d", members=("a", "b"), weights="val", tta={"shifts": 1}
    )
    out = models / "e"
    out.mkdir()
    rows = ens.train(mp, split, split, seed=0, out_dir=out)
    assert [r["epoch"] for r in rows] == [1] and 0 <= rows[0]["val_accuracy"] <= 1
    spec = json.loads((out / ens.MODEL_FILE).read_text())
    assert spec["members"] == ["a", "b"] and spec["tta"] == {"shifts": 1}
    assert sum(spec["weights"]) == pytest.approx(1)
    loaded = ens.load(out)
    want = ens.combine(ens.member_probas(loaded, split.x), loaded.weights)
    np.testing.assert_allclose(ens.predict_proba(loaded, split.x), want, rtol=1e-6)
    assert ens.first_layer_kernels(loaded) is None and ens.feature_maps(loaded, split.x) is None
    # the folder needs nothing outside it, and checks what it holds
    for m in ("a", "b"):
        (models / m / "model.npz").unlink()
    ens.load(out)
    (out / "model" / "members" / "b" / "model.npz").write_bytes(b"not it")
    with pytest.raises(BadModelFile, match=r"members/b/model.npz: missing or not the member"):
        ens.load(out)


def _with_ensemble(**fields):
    raw = params_spec()
    raw["models"]["ens"] = {
        "family": "ensemble",
        "dataset": "digits10",
        "members": ["keras_cnn", "custom_cnn"],
    } | fields
    return raw


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({"members": ["keras_cnn", "nope"]}, "models.ens.members[1]: 'nope' is not a model"),
        (
            {"members": ["keras_cnn", "dense_mlp"]},
            "models.ens.members[1]: 'dense_mlp' is trained on 'digits025', the ensemble on "
            "'digits10' (members share one dataset)",
        ),
        ({"members": ["keras_cnn"]}, "models.ens.members: list at least two presets"),
        ({"weights": "median"}, "models.ens.weights: 'median' is not one of 'mean' or 'val'"),
        ({"arch": []}, "models.ens.arch: unknown key"),
        ({"train": {"epochs": 1}}, "models.ens.train: unknown key"),
        ({"tta": {"shifts": 9}}, "models.ens.tta.shifts:"),
    ],
)
def test_bad_ensemble_params_are_refused_in_one_line(fields, line):
    with pytest.raises(params_mod.ParamsError) as info:
        params_mod.parse(_with_ensemble(**fields))
    assert str(info.value).startswith(line) and "\n" not in str(info.value)


def test_an_ensemble_cannot_be_a_member():
    raw = _with_ensemble()
    raw["models"]["ens2"] = copy.deepcopy(raw["models"]["ens"]) | {"members": ["ens", "keras_cnn"]}
    with pytest.raises(params_mod.ParamsError, match=r"^models.ens2.members\[0\]: 'ens' is an"):
        params_mod.parse(raw)


def test_a_good_ensemble_parses():
    mp = params_mod.parse(_with_ensemble(weights="val", tta={"shifts": 1})).models["ens"]
    assert (mp.members, mp.weights, mp.tta.shifts) == (("keras_cnn", "custom_cnn"), "val", 1)
