"""Typed options: validated on construction, unknown keys named with the closest valid one, recipes round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptsq.config import SECTIONS, OnnxOptions, QuantConfig, options_table
from ptsq.errors import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "options.md"


def test_every_section_round_trips_through_json_and_yaml(tmp_path: Path) -> None:
    cfg = QuantConfig(
        engine="onnx", skip=("name:fc",), onnx={"format": "qoperator", "reduce_range": "off"},
        openvino={"depthwise": "int8"}, pt2e={"compile": False}, auto={"engines": ["fx", "onnx"], "runs": 3},
        dynamic={"min_cosine": 0.98}, qat={"epochs": 2, "lr": 0.01}, calibration={"num": 64, "batch_size": 8},
        fx={"observer": "mse"},
    )  # fmt: skip
    assert isinstance(cfg.onnx, OnnxOptions) and cfg.onnx.format == "qoperator" and cfg.auto.engines == ("fx", "onnx")
    assert QuantConfig.from_dict(json.loads(cfg.to_json())) == cfg
    for name, text in (("r.yaml", cfg.to_yaml()), ("r.json", cfg.to_json())):
        (tmp_path / name).write_text(text)
        assert QuantConfig.from_file(tmp_path / name) == cfg


@pytest.mark.parametrize(
    ("build", "closest"),
    [
        (lambda: QuantConfig.from_dict({"speedguard": 2.0}), "speed_guard"),
        (lambda: QuantConfig.from_dict({"onnx": {"formt": "qdq"}}), "format"),
        (lambda: QuantConfig.from_dict({"opnvino": {}}), "openvino"),
        (lambda: QuantConfig().replace(**{"pt2e.compiled": False}), "compile"),
        (lambda: QuantConfig(onnx={"calibraton": "minmax"}), "calibration"),
    ],
)
def test_a_misspelt_key_names_the_closest_valid_key(build, closest) -> None:
    with pytest.raises(ConfigError) as err:
        build()
    assert f"did you mean {closest!r}" in err.value.hint


@pytest.mark.parametrize(
    ("section", "values", "accepted"),
    [
        ("pt2e", {"compile": "false"}, "true or false"),  # a string is not a boolean (it used to count as on)
        ("onnx", {"format": "qdqq"}, "qdq, qoperator"),
        ("openvino", {"overflow_fix": "sometimes"}, "auto, first_layer, all, off"),
        ("auto", {"engines": ["fx", "tensorrt"]}, "openvino"),
        ("auto", {"margin_db": "1"}, "finite number"),
        ("dynamic", {"min_cosine": 1.5}, "0.99"),
        ("qat", {"lr": 0.0}, "1e-4"),
        ("fx", {"observer": "kl"}, "entropy"),
    ],
)
def test_bad_option_values_are_refused_with_what_is_accepted(section, values, accepted) -> None:
    with pytest.raises(ConfigError) as err:
        QuantConfig.from_dict({section: values})
    assert accepted in f"{err.value.message} {err.value.hint}"


def test_version_1_configs_in_older_manifests_are_upgraded() -> None:
    old = {"type": "QuantConfig", "version": 1, "observer": "mse", "probe_kernels": False,
           "extra": {"onnx_format": "qoperator", "pt2e_compile": False, "auto_threads": None}}  # fmt: skip
    cfg = QuantConfig.from_dict(old)
    assert (cfg.fx.observer, cfg.fx.probe_kernels, cfg.onnx.format, cfg.pt2e.compile, cfg.auto.threads) == (
        "mse", False, "qoperator", False, 0,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="onnx_formt"):
        QuantConfig.from_dict({"version": 1, "extra": {"onnx_formt": "qdq"}})


def test_recipe_files_fail_in_one_line(tmp_path: Path) -> None:
    cases = {"list.yaml": "- a\n- b\n", "bad.yaml": "engine: [fx\n", "bad.json": "{", "key.yaml": "engin: fx\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError) as err:
            QuantConfig.from_file(tmp_path / name)
        assert "\n" not in err.value.message
    with pytest.raises(ConfigError, match="cannot read the --config recipe"):
        QuantConfig.from_file(tmp_path / "missing.yaml")


def test_the_options_table_in_docs_is_current() -> None:
    assert DOCS.read_text() == options_table(), "regenerate it: python -m ptsq.config > docs/options.md"
    for name in SECTIONS:
        assert f"`{name}." in DOCS.read_text()
