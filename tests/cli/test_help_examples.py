"""Every command's --help examples use model specs that exist: a new user can paste them."""

from __future__ import annotations

import re

import pytest

from ptsq.cli.main import app
from tests.cli.conftest import run_cli


def _helps() -> dict[str, str]:
    return {c.name: run_cli(c.name, "--help").stdout for c in app.registered_commands}


def test_examples_name_real_specs_not_placeholders():
    pytest.importorskip("efficientnet_lite_pytorch", reason="the demo extra (pip install 'ptsq[demo]')")
    import ptsq

    helps = _helps()
    specs = {s for text in helps.values() for s in re.findall(r"\b(examples\.[\w.]+:\w+)", text)}
    assert specs and "eval" in {n for n, t in helps.items() if "examples.reference" in t}
    for s in sorted(specs):
        assert ptsq.load_model(s).model is not None, s
    for name, text in helps.items():
        assert not re.search(r"\b\w+_spec\b", text), (name, "placeholder spec in the examples")
