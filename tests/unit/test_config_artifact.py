"""QuantConfig/Preprocess round trips and validation; manifest sealing catches edits and new versions."""

from __future__ import annotations

import json

import pytest

from ptsq import artifact
from ptsq.config import QuantConfig, SkipRule
from ptsq.data.preprocess import Preprocess, parse_floats, parse_size, preset
from ptsq.errors import ArtifactError, ConfigError


def test_quantconfig_round_trip():
    cfg = QuantConfig(backend="x86", skip=("name:fc", "regex:.*conv.*", "type:PReLU"), per_channel=False)
    again = QuantConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    assert [str(r) for r in again.skip] == ["name:fc", "regex:.*conv.*", "type:PReLU"]


@pytest.mark.parametrize(
    "bad",
    [{"engine": "tensorrt"}, {"mode": "int4"}, {"cleanup": ("fold-everything",)}, {"check_samples": -1},
     {"type": "Other"}, {"version": 99}, {"nonsense": 1}, {"skip": ["regex:("]}],
)  # fmt: skip
def test_quantconfig_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        QuantConfig.from_dict(bad)


def test_skip_rule_matching():
    assert SkipRule.parse("features.3").matches("features.3.conv", "torch.nn.Conv2d")
    assert not SkipRule.parse("features.3").matches("features.30", "torch.nn.Conv2d")
    assert SkipRule.parse("type:PReLU").matches("a.b", "torch.nn.modules.activation.PReLU")
    assert SkipRule.parse("regex:.*fc").matches("head.fc", "x")


def test_preprocess_round_trip_and_presets():
    p = preset("minus1to1", size=(112, 112))
    assert Preprocess.from_dict(p.to_dict()) == p
    assert p.input_shape(2) == (2, 3, 112, 112)
    assert preset("mnist").input_shape() == (1, 1, 28, 28)
    with pytest.raises(ConfigError):
        preset("nope")
    with pytest.raises(ConfigError):
        Preprocess(mean=(0.5, 0.5), std=(1.0,))


@pytest.mark.parametrize(("text", "want"), [("224", (224, 224)), ("240x320", (240, 320)), ("3x64x48", (64, 48))])
def test_parse_size(text, want):
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["", "0", "abc", "1x2x3x4", "-5", "99999"])
def test_parse_size_rejects(text):
    with pytest.raises(ConfigError):
        parse_size(text)


def test_parse_floats():
    assert parse_floats("0.5, 0.25", "mean") == (0.5, 0.25)
    for bad in ("", "a,b", "nan", "1,inf"):
        with pytest.raises(ConfigError):
            parse_floats(bad, "mean")


def test_manifest_seal_detects_edits_and_newer_versions(tmp_path):
    text = artifact.seal({"engine": "fx", "backend": "x86"})
    data = artifact.unseal(text, tmp_path / "a.pt")
    assert data["engine"] == "fx" and data["format_version"] == artifact.FORMAT_VERSION
    edited = json.loads(text)
    edited["backend"] = "qnnpack"
    with pytest.raises(ArtifactError, match="modified"):
        artifact.unseal(json.dumps(edited), tmp_path / "a.pt")
    newer = artifact.seal({"engine": "fx", "format_version": artifact.FORMAT_VERSION + 1})
    with pytest.raises(ArtifactError, match="newer ptsq"):
        artifact.unseal(newer, tmp_path / "a.pt")
    with pytest.raises(ArtifactError, match="no ptsq manifest"):
        artifact.unseal("", tmp_path / "a.pt")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.pt"

    def boom(tmp):
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        artifact.write(target, boom)
    assert list(tmp_path.iterdir()) == []
