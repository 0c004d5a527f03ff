"""The family contract (pipeline/models/family.py): every registered module has the members
and signatures of ``ModelFamily``, every ``family:`` of params has a module, and the registry
imports a family only when asked (the scratch family never loads TensorFlow)."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import types
import typing

import pytest

from pipeline.core.params import EnsembleParams, ModelParams
from pipeline.models import family as families
from pipeline.models.family import FAMILIES, ModelFamily

MEMBERS = sorted(n for n, v in vars(ModelFamily).items() if callable(v) and n[0] != "_")
POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def signature_problems(function, member: str) -> list[str]:
    """How ``function`` cannot be called as the Protocol's ``member`` is: a parameter missing,
    of another kind or without the default the Protocol has, positional ones out of order,
    or an extra parameter without a default."""
    want = list(inspect.signature(getattr(ModelFamily, member)).parameters.values())[1:]
    have = inspect.signature(function).parameters
    problems = []
    for p in want:
        q = have.get(p.name)
        if q is None:
            problems.append(f"{member}: no parameter {p.name!r}")
        elif q.kind != p.kind:
            problems.append(
                f"{member}: {p.name!r} is {q.kind.description}, not {p.kind.description}"
            )
        elif p.default is not p.empty and q.default is q.empty:
            problems.append(f"{member}: {p.name!r} has no default")
    order = [p.name for p in want if p.kind in POSITIONAL]
    got = [q.name for q in have.values() if q.kind in POSITIONAL][: len(order)]
    if got != order and not problems:
        problems.append(f"{member}: positional parameters {got}, not {order}")
    names = {p.name for p in want}
    for q in have.values():
        if q.name not in names and q.default is q.empty and q.kind not in VARIADIC:
            problems.append(f"{member}: extra parameter {q.name!r} without a default")
    return problems


def test_the_protocol_lists_the_contract():
    contract = ["train", "load", "load_file", "predict_proba", "first_layer_kernels"]
    assert sorted([*contract, "feature_maps", "log_model"]) == MEMBERS


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_registered_family_satisfies_the_protocol(name):
    module = families.get(name)
    assert module is importlib.import_module(FAMILIES[name])
    assert isinstance(module, ModelFamily)
    problems = [p for m in MEMBERS for p in signature_problems(getattr(module, m), m)]
    assert problems == [], f"{FAMILIES[name]} does not satisfy ModelFamily"


def test_the_signature_check_catches_a_wrong_module():
    def train(mp, train, val, seed, out_dir):  # seed positional, on_epoch missing
        return []

    def predict_proba(model, x, batch_size):  # a required extra
        return x

    def load(path):  # renamed parameter
        return None

    fake = types.SimpleNamespace(train=train, predict_proba=predict_proba, load=load)
    assert signature_problems(fake.train, "train") == [
        "train: 'seed' is positional or keyword, not keyword-only",
        "train: 'out_dir' is positional or keyword, not keyword-only",
        "train: no parameter 'on_epoch'",
    ]
    assert signature_problems(fake.predict_proba, "predict_proba") == [
        "predict_proba: extra parameter 'batch_size' without a default"
    ]
    assert signature_problems(fake.load, "load") == [
        "load: no parameter 'out_dir'",
        "load: extra parameter 'path' without a default",
    ]
    assert not isinstance(fake, ModelFamily)  # no load_file, log_model, ...


def test_every_family_of_params_is_registered_and_others_are_refused():
    named = [m.model_fields["family"].annotation for m in (ModelParams, EnsembleParams)]
    assert set(FAMILIES) == {f for a in named for f in typing.get_args(a)}
    with pytest.raises(ValueError, match=r"^unknown model family 'torch' \(known: scratch, "):
        families.get("torch")


def test_the_registry_imports_the_scratch_family_without_tensorflow():
    code = (
        "import sys; from pipeline.models import family;"
        "m = family.get('scratch'); assert isinstance(m, family.ModelFamily);"
        "print([n for n in ('tensorflow', 'keras') if n in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
