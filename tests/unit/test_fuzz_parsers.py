"""Fuzz the parsers ptsq owns: whatever the input, they return a value or raise a PtsqError.

Covers CLI argument values (input sizes, mean/std lists, skip rules, bench thread/batch lists),
config dictionaries (QuantConfig, Preprocess), class-map files, and artifact manifests. Each test
is bounded (max_examples, no deadline) so the file stays fast.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptsq import artifact
from ptsq.config import QuantConfig, SkipRule
from ptsq.data.preprocess import Preprocess, parse_floats, parse_size
from ptsq.errors import PtsqError

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# text that looks like what users type, plus anything at all
numberish = st.text(alphabet="0123456789xX*,. -+eEinfaINFA_", max_size=24)
any_text = st.one_of(numberish, st.text(max_size=40))

json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
)  # fmt: skip
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)


def _ok_or_ptsq(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except PtsqError as exc:
        assert exc.message and "\n" not in exc.message, repr(exc.message)
        return None


@FUZZ
@given(any_text)
def test_parse_size(text: str) -> None:
    out = _ok_or_ptsq(parse_size, text)
    if out is not None:
        h, w = out
        assert isinstance(h, int) and isinstance(w, int) and 1 <= h <= 8192 and 1 <= w <= 8192


@FUZZ
@given(any_text)
def test_parse_floats(text: str) -> None:
    out = _ok_or_ptsq(parse_floats, text, "mean")
    if out is not None:
        assert out and all(isinstance(v, float) and math.isfinite(v) for v in out)


@FUZZ
@given(st.one_of(st.text(max_size=30), st.from_regex(r"(name|regex|type|NAME|x)?:.{0,12}", fullmatch=True)))
def test_skip_rule_parse(text: str) -> None:
    rule = _ok_or_ptsq(SkipRule.parse, text)
    if rule is not None:
        assert rule.kind in SkipRule.KINDS and rule.pattern
        rule.matches("features.0", "torch.nn.Conv2d")  # a parsed rule can always be applied


_CONFIG_KEYS = [
    "engine", "mode", "backend", "per_channel", "skip", "strict", "check_samples", "warn_sqnr_db", "warn_agreement",
    "freeze", "speed_guard", "cleanup", "seed", "fx", "onnx", "openvino", "pt2e", "auto", "calibration", "dynamic",
    "qat", "type", "version",
]  # fmt: skip


@FUZZ
@given(
    st.dictionaries(st.one_of(st.sampled_from(_CONFIG_KEYS), st.text(max_size=6)), json_value, max_size=6) | json_value
)
def test_quant_config_from_dict(d: Any) -> None:
    cfg = _ok_or_ptsq(QuantConfig.from_dict, d)
    if cfg is not None:
        assert QuantConfig.from_dict(json.loads(cfg.to_json())) == cfg  # what loads, round-trips


@FUZZ
@given(st.text(max_size=60))
def test_quant_config_from_json_text(text: str) -> None:
    """A config file's text: JSON parse errors are the loader's; from_dict must not crash on what parses."""
    try:
        data = json.loads(text)
    except ValueError:
        return
    cfg = _ok_or_ptsq(QuantConfig.from_dict, data)
    if cfg is not None:  # only a mapping of known keys loads, and it loads to exactly what it says
        assert isinstance(data, dict) and QuantConfig.from_dict(cfg.to_dict()) == cfg
        assert all(cfg.to_dict()[k] == v for k, v in data.items() if k in ("engine", "mode", "seed", "strict"))


_PRE_KEYS = ["size", "crop_pct", "scale", "mean", "std", "channels", "preset"]


@FUZZ
@given(st.dictionaries(st.one_of(st.sampled_from(_PRE_KEYS), st.text(max_size=5)), json_value, max_size=5) | json_value)
def test_preprocess_from_dict(d: Any) -> None:
    pre = _ok_or_ptsq(Preprocess.from_dict, d)
    if pre is not None:
        assert Preprocess.from_dict(pre.to_dict()) == pre


def _valid_manifest() -> dict[str, Any]:
    return json.loads(artifact.seal({"engine": "fx", "backend": "x86", "precision": [], "check": {"sqnr_db": 30.0}}))


@FUZZ
@given(
    st.one_of(
        st.text(max_size=80),
        json_value.map(lambda v: json.dumps(v)),
        # a valid manifest with one field replaced: most must fail the checksum, none may crash
        st.tuples(st.sampled_from(["format", "format_version", "manifest_sha256", "engine", "check"]), json_value).map(
            lambda kv: json.dumps({**_valid_manifest(), kv[0]: kv[1]})
        ),
    )
)
def test_unseal_manifest(text: str) -> None:
    data = _ok_or_ptsq(artifact.unseal, text, Path("fuzz.pt"))
    if data is not None:  # what is accepted is exactly what seal() writes for it: nothing edited slipped through
        assert data["format"] == artifact.FORMAT and json.loads(artifact.seal(data)) == data


def test_unseal_accepts_what_seal_writes() -> None:
    m = {"engine": "fx", "check": {"sqnr_db": float("nan")}, "notes": ["é"]}
    assert artifact.unseal(artifact.seal(m), Path("x.pt"))["engine"] == "fx"


@FUZZ
@given(any_text, st.sampled_from(["threads", "batch-size"]))
def test_bench_int_lists(text: str, what: str) -> None:
    from ptsq.cli.bench import _ints

    out = _ok_or_ptsq(_ints, text, what)
    if out is not None:
        assert out and all(isinstance(v, int) and 1 <= v <= 4096 for v in out)


@FUZZ
@given(
    st.one_of(
        st.text(max_size=80).map(str.encode), json_value.map(lambda v: json.dumps(v).encode()), st.binary(max_size=40)
    )
)
def test_class_map_file(content: bytes) -> None:
    evaluation = pytest.importorskip("ptsq.evaluation")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "classes.txt"
        p.write_bytes(content)
        out = _ok_or_ptsq(evaluation.read_class_map, p)
    if out is not None:
        assert all(isinstance(k, str) and isinstance(v, int) for k, v in out.items())
