"""ptsq.evaluate and label discovery, on real image files and a model whose predictions the test controls."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import ptsq
from ptsq.bench import Candidate, benchmark
from ptsq.config import QuantConfig
from ptsq.data import CalibrationImages, preset
from ptsq.errors import ConfigError, DataError, InputShapeError
from ptsq.evaluation import find_labelled, preprocess_from_artifacts, read_class_map
from tests.colour_data import class_folders, colour_image, flat_labelled
from tests.models import ColourNet, SmallNet

UNIT16 = preset("unit", size=(16, 16))


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return class_folders(tmp_path_factory.mktemp("folders"))


@pytest.fixture(scope="module")
def flat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return flat_labelled(tmp_path_factory.mktemp("flat"))


def _artifact(root: Path, folders: Path, size: int) -> Path:
    pre = preset("unit", size=(size, size))
    qm = ptsq.quantize(
        ColourNet(), CalibrationImages(folders, pre, num=12, batch_size=4), config=QuantConfig(speed_guard=0),
        preprocess=pre, progress=False,
    )  # fmt: skip
    return qm.save(root / f"colour{size}.pt")


@pytest.fixture(scope="module")
def artifact16(tmp_path_factory: pytest.TempPathFactory, folders: Path) -> Path:
    return _artifact(tmp_path_factory.mktemp("art"), folders, 16)


def test_folder_labels_are_sorted_names(folders):
    found = find_labelled(folders)
    assert found.mode == "folders" and found.classes == ["a_red", "b_green", "c_blue"]
    assert [(p.parent.name, y) for p, y in zip(found.paths, found.labels)][::4] == [
        ("a_red", 0), ("b_green", 1), ("c_blue", 2)
    ]  # fmt: skip


def test_pattern_labels_and_auto_none(flat):
    assert find_labelled(flat).mode == "none"  # flat folder, no pattern: fidelity only
    found = find_labelled(flat, label_pattern=r"photo_\d+_(\d+)\.png")
    assert found.mode == "pattern"
    assert sorted(found.labels) == [0] * 4 + [1] * 4 + [2] * 4
    assert all(p.stem.endswith(f"_{y}") for p, y in zip(found.paths, found.labels))


def test_pattern_skips_non_matching_and_fails_when_none_match(flat, tmp_path):
    d = flat_labelled(tmp_path / "mixed")
    colour_image(d / "other.png", 0, __import__("numpy").random.default_rng(0))
    found = find_labelled(d, label_pattern=r"photo_\d+_(\d+)\.png")
    assert len(found.paths) == 12 and [p.name for p in found.ignored] == ["other.png"]
    with pytest.raises(DataError, match="labels cannot be determined"):
        find_labelled(d, label_pattern=r"nothing_(\d+)")
    with pytest.raises(ConfigError, match="exactly one"):
        find_labelled(d, label_pattern=r"photo_(\d+)_(\d+)")
    with pytest.raises(DataError, match="not an integer"):
        find_labelled(d, label_pattern=r"photo_\d+_(\d+\.png)")


def test_class_map_and_index_folders(tmp_path):
    d = class_folders(tmp_path / "idx", per_class=1, names={0: "0", 1: "1", 2: "2"})
    assert find_labelled(d, labels_from_index=True).labels == [0, 1, 2]
    named = class_folders(tmp_path / "named", per_class=1)
    cmap = tmp_path / "map.json"
    cmap.write_text(json.dumps({"a_red": 7, "b_green": 3, "c_blue": 5}))
    assert find_labelled(named, class_map=cmap).labels == [7, 3, 5]
    lines = tmp_path / "map.txt"
    lines.write_text("b_green\na_red\nc_blue\n")
    assert read_class_map(lines) == {"b_green": 0, "a_red": 1, "c_blue": 2}
    with pytest.raises(DataError, match="not an integer class index"):
        find_labelled(named, labels_from_index=True)
    cmap.write_text(json.dumps({"a_red": 0}))
    with pytest.raises(DataError, match="not in the class map"):
        find_labelled(named, class_map=cmap)


def test_loose_images_cannot_be_labelled_by_folder(flat):
    with pytest.raises(DataError, match="not in class sub-folders"):
        find_labelled(flat, labels="folders")


def test_max_images_keeps_a_spread_subset(folders):
    found = find_labelled(folders, max_images=6)
    assert len(found.paths) == 6 and found.paths == sorted(found.paths)
    assert find_labelled(folders, max_images=6).paths == found.paths  # reproducible


def test_top1_matches_controlled_predictions(folders, tmp_path):
    res = ptsq.evaluate([ColourNet()], folders, preprocess=UNIT16, batch_size=5)
    assert res.images == 12 and res.classes == 3
    assert res.models[0].top1 == 1.0 and res.models[0].top5 == 1.0
    # one green image filed as red: exactly one of 12 wrong, top-5 (3 classes) still right
    d = class_folders(tmp_path / "wrong")
    colour_image(d / "a_red" / "img_zz.png", 1, __import__("numpy").random.default_rng(3))
    res = ptsq.evaluate([ColourNet()], d, preprocess=UNIT16, batch_size=4)
    assert res.images == 13
    assert res.models[0].top1 == pytest.approx(12 / 13) and res.models[0].top5 == 1.0


def test_fidelity_of_identical_and_quantized_models(folders, artifact16):
    same = ptsq.evaluate([ColourNet(), ColourNet()], folders, preprocess=UNIT16, labels="none")
    f = same.models[1].fidelity
    assert f["top1_agreement"] == 1.0 and f["top5_overlap"] == 1.0 and f["kl"] == pytest.approx(0, abs=1e-12)
    assert math.isinf(f["sqnr_db"]) and f["cosine"] == pytest.approx(1.0)
    art = ptsq.load(artifact16)
    res = ptsq.evaluate([ColourNet(), art], folders)  # preprocessing from the artifact's manifest
    assert res.preprocess["size"] == [16, 16] and res.preprocess["preset"] == "unit"
    assert res.models[0].fidelity is None
    f = res.models[1].fidelity
    assert f["samples"] == 12 and f["top1_agreement"] == 1.0 and f["sqnr_db"] > 25 and f["cosine"] > 0.99
    assert 0 <= f["kl"] < 1e-3
    assert res.models[1].top1 == 1.0


def test_bad_inputs(folders, flat, artifact16, tmp_path):
    with pytest.raises(DataError, match="labels cannot be determined"):
        ptsq.evaluate([ColourNet()], flat, preprocess=UNIT16)  # no labels and nothing to compare with
    with pytest.raises(DataError, match=r"3 class folders but .* 10 outputs"):
        ptsq.evaluate([SmallNet()], folders, preprocess=preset("unit", size=(32, 32)))
    with pytest.raises(DataError, match=r"labels go up to 2 but .* only 1 outputs"):
        ptsq.evaluate([torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(1))], flat,
                      preprocess=UNIT16, label_pattern=r"_(\d)\.png")  # fmt: skip
    art24 = _artifact(tmp_path, folders, 24)
    with pytest.raises(ConfigError, match="different input sizes"):
        preprocess_from_artifacts([ptsq.load(artifact16), ptsq.load(art24)], ["a16", "a24"])


def test_labelled_needs_class_scores(folders):
    with pytest.raises(InputShapeError, match="not one \\(batch, classes\\)"):
        ptsq.evaluate([torch.nn.Identity()], folders, preprocess=UNIT16)


@pytest.mark.slow  # a child process imports torch (the CLI test covers the same fields in the fast tier)
def test_benchmark_reports_peak_memory(artifact16):
    art = ptsq.load(artifact16)
    cands = [Candidate("a", art.module, artifact16.stat().st_size, "int8", source={"artifact": str(artifact16)})]
    res = benchmark(cands, lambda bs: (torch.rand(bs, 3, 16, 16),), runs=3, warmup=1, progress=False, memory=True)
    (mem,) = res.to_dict()["memory"]
    assert mem.get("error") is None, mem
    assert mem["peak_rss_mb"] > 10 and mem["model_mb"] >= 0
    assert res.timings[0].peak_rss_mb == mem["peak_rss_mb"]
