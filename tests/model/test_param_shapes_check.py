"""Every Transformer build holds its parameters to hepta.config.param_shapes, under `python -O` too,
and a disagreement names the first parameter that differs."""

import dataclasses
import subprocess
import sys

import pytest

import hepta
import hepta.model.transformer as transformer_module
from hepta.config import param_shapes


def _shapes_with(change):
    def changed(cfg):
        return [change(p) for p in param_shapes(cfg)]
    return changed


def test_a_shape_that_differs_is_named(monkeypatch):
    widened = _shapes_with(lambda p: dataclasses.replace(p, shape=(p.shape[0] + 1, *p.shape[1:]))
                           if p.name == "norm.weight" else p)
    monkeypatch.setattr(transformer_module, "param_shapes", widened)
    with pytest.raises(RuntimeError, match=r"parameter norm\.weight has shape \(\d+,\) but .*param_shapes gives"):
        hepta.build_model(hepta.get_preset("tiny"), seed=0)


def test_a_parameter_missing_on_either_side_is_named(monkeypatch):
    cfg = hepta.get_preset("tiny")
    shapes = list(param_shapes(cfg))
    monkeypatch.setattr(transformer_module, "param_shapes", lambda c: [p for p in shapes if p.name != "norm.weight"])
    with pytest.raises(RuntimeError, match=r"parameter norm\.weight .* is missing from hepta\.config\.param_shapes"):
        hepta.build_model(cfg, seed=0)
    extra = dataclasses.replace(shapes[0], name="extra.weight")
    monkeypatch.setattr(transformer_module, "param_shapes", lambda c: [*shapes, extra])
    with pytest.raises(RuntimeError, match=r"param_shapes lists extra\.weight .* which the Transformer does not build"):
        hepta.build_model(cfg, seed=0)


def test_the_check_runs_under_python_dash_O():
    code = ("import dataclasses, hepta, hepta.model.transformer as t\n"
            "real = t.param_shapes\n"
            "t.param_shapes = lambda cfg: [dataclasses.replace(p, shape=(1,)) if p.name == 'norm.weight' else p "
            "for p in real(cfg)]\n"
            "try:\n"
            "    hepta.build_model(hepta.get_preset('tiny'), seed=0)\n"
            "except RuntimeError as e:\n"
            "    print('raised:', e)\n")
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=120)
    assert "raised: Transformer parameter norm.weight" in out.stdout, out.stderr
