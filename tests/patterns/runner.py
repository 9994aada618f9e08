"""Quantize one pattern two ways on the same batches and record what happened.

* **plain**: the torch.ao FX recipe a user would write -- ``prepare_fx`` with the backend's default
  ``QConfigMapping`` and the first batch as example inputs, calibrate, ``convert_fx``.
* **ptsq**: ``ptsq.quantize`` with default settings (the speed guard only where the pattern asks for it),
  then save, reload in this process, and compare the reloaded artifact with the in-memory int8 model.

Both calibrate on the same batches (all but the last two) and are compared with fp32 on the last two
(ptsq is told to hold back exactly their samples for its self-check, ``check_samples``). SQNR is over every output
tensor of every check batch, concatenated.
"""

from __future__ import annotations

import copy
import inspect
import math
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptsq.fidelity import flatten_outputs, sqnr_db
from tests.patterns.catalogue import Pattern

HELD_BACK = 2


def batches(p: Pattern) -> list[Any]:
    g = torch.Generator().manual_seed(sum(map(ord, p.name)))
    return [p.batch(g) for _ in range(p.batches)]


def build(p: Pattern) -> nn.Module:
    torch.manual_seed(sum(map(ord, p.name)) % 1000)
    return p.build().eval()


def _keywords(model: nn.Module, batch: Any) -> bool:
    if not isinstance(batch, dict):
        return False
    params = inspect.signature(model.forward).parameters
    return all(k in params for k in batch)


def call(model: Any, batch: Any, reference: nn.Module) -> Any:
    """Run ``model`` on one batch the way its user would (inputs only; dicts of named inputs by keyword)."""
    from ptsq.calibration import as_args

    if _keywords(reference, batch):
        return model(**batch)
    return model(*as_args(batch, reference))


def outputs(model: Any, data: list[Any], reference: nn.Module) -> list[Any]:
    with torch.inference_mode():
        return [call(model, b, reference) for b in data]


def sqnr(ref: list[Any], got: list[Any]) -> float:
    r = torch.cat([t.detach().double().flatten() for o in ref for t in flatten_outputs(o)])
    g = torch.cat([t.detach().double().flatten() for o in got for t in flatten_outputs(o)])
    return sqnr_db(r, g)


def identical(a: list[Any], b: list[Any]) -> bool:
    fa = [t for o in a for t in flatten_outputs(o)]
    fb = [t for o in b for t in flatten_outputs(o)]
    return len(fa) == len(fb) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(fa, fb))


def _fingerprint(data: list[Any]) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_leaves

    return [t.clone() for t in tree_leaves(data) if isinstance(t, torch.Tensor)]


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


def run_plain(model: nn.Module, calib: list[Any], check: list[Any], ref: list[Any]) -> dict[str, Any]:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from ptsq.calibration import as_args

    torch.backends.quantized.engine = "x86"
    stage = "prepare_fx"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            example = as_args(calib[0], model)
            if _keywords(model, calib[0]):
                example = tuple(calib[0].values())
            prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), example)
            stage = "calibration"
            with torch.no_grad():
                for b in calib:
                    call(prepared, b, model)
            stage = "convert_fx"
            converted = convert_fx(prepared)
            stage = "int8 run"
            got = outputs(converted, check, model)
    except Exception as exc:  # the plain recipe failing is a result, not an error
        return {"ok": False, "stage": stage, "error": _error(exc)}
    return {"ok": True, "sqnr_db": round(sqnr(ref, got), 2)}


def run_ptsq(p: Pattern, model: nn.Module, data: list[Any], check: list[Any], ref: list[Any]) -> dict[str, Any]:
    import ptsq
    from ptsq.calibration import as_args, batch_size
    from ptsq.config import QuantConfig

    # the corpus compares fidelity with the plain recipe on the same calibration batches: ptsq holds back
    # exactly the check batches; the whole-model speed check (tested on its own) is off
    held = sum(batch_size(as_args(b, model)) for b in check)
    config = QuantConfig(speed_guard=1.5 if p.speed_guard else 0, speed={"check": False}, check_samples=held)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qm = ptsq.quantize(model, data, config=config, progress=False)
    except Exception as exc:
        return {"ok": False, "stage": "quantize", "error": _error(exc), "trace": traceback.format_exc(limit=-3)}
    got = outputs(qm.module, check, model)
    res: dict[str, Any] = {
        "ok": True,
        "sqnr_db": round(sqnr(ref, got), 2),
        **qm.summary()["layers"],
        "fp32_layers": [f"{r['name']} ({r['op']}): {r.get('reason', '')}" for r in qm.summary()["fp32_layers"]],
        "notes": qm.manifest["notes"],
    }
    try:
        with tempfile.TemporaryDirectory() as d:
            path = qm.save(Path(d) / "model.pt")
            art = ptsq.load(path)
            names = qm.manifest["input"].get("keywords")
            with torch.inference_mode():
                loaded = [art(*[b[n] for n in names]) if names else call(art, b, model) for b in check]
        res["save"] = qm.result.details.get("torchscript", "trace")
        res["reload_identical"] = identical(got, loaded)
    except Exception as exc:
        res.update(ok=False, stage="save/load", error=_error(exc), trace=traceback.format_exc(limit=-3))
    return res


def run(p: Pattern) -> dict[str, Any]:
    """Both recipes on pattern ``p``; one JSON-able record."""
    from ptsq.artifact import state_hash

    t0 = time.perf_counter()
    model = build(p)
    data = batches(p)
    calib, check = data[:-HELD_BACK], data[-HELD_BACK:]
    before_hash, before_data = state_hash(model), _fingerprint(data)
    ref = outputs(model, check, model)
    plain = run_plain(model, calib, check, ref)
    ours = run_ptsq(p, model, data, check, ref)
    after = outputs(model, check, model)
    unchanged = (
        state_hash(model) == before_hash
        and identical(ref, after)
        and all(torch.equal(a, b) for a, b in zip(before_data, _fingerprint(data)))
    )
    gap = None
    if plain["ok"] and ours["ok"] and math.isfinite(plain["sqnr_db"]):
        gap = round(ours["sqnr_db"] - plain["sqnr_db"], 2)
    return {
        "name": p.name,
        "what": p.what,
        "speed_guard": p.speed_guard,
        "plain": plain,
        "ptsq": ours,
        "model_and_inputs_unchanged": unchanged,
        "sqnr_gain_db": gap,
        "seconds": round(time.perf_counter() - t0, 2),
    }


__all__ = ["HELD_BACK", "batches", "build", "run"]
