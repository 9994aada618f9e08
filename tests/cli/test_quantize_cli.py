"""ptsq quantize / info / bench through the CLI: happy paths and every bad input the core names."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.cli.conftest import assert_clean_error, run_cli, spec, tree_digest
from tests.conftest import write_photos
from tests.models import FaceNet, SmallNet


def test_quantize_info_bench_json(photo_dir, small_weights, tmp_path):
    out = tmp_path / "small.pt"
    before = tree_digest(photo_dir)
    res = run_cli("quantize", spec("SmallNet"), "--weights", small_weights, "--calib", photo_dir, "-o", out,
                  "--preset", "imagenet", "--input-size", "32", "--num-calib", "16",
                  "--batch-size", "4", "--speed-guard", "0", "--json")  # fmt: skip
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["layers"]["int8"] >= 4 and data["layers"]["fp32"] == 0
    assert data["int8_bytes"] == out.stat().st_size
    assert data["fp32_bytes"] > data["int8_bytes"]
    assert data["calibration"]["used"] == 16 and data["calibration"]["skipped"] == 0
    assert tree_digest(photo_dir) == before

    info = json.loads(run_cli("info", out, "--json").stdout)
    assert info["input"]["shapes"] == [[1, 3, 32, 32]]
    assert info["model"]["weights_sha256"] and info["preprocess"]["size"] == [32, 32]

    res = run_cli("bench", spec("SmallNet"), out, "--threads", "1", "--runs", "5", "--warmup", "1", "--json")
    assert res.code == 0, res.stderr
    b = json.loads(res.stdout)
    assert [t["label"] for t in b["timings"]] == [spec("SmallNet"), "small.pt"]
    assert b["timings"][0]["speedup"] == 1.0 and b["timings"][1]["median_ms"] > 0
    assert b["machine"]["cores"] >= 1

    # an existing output is not overwritten without --force
    res = run_cli("quantize", spec("SmallNet"), "--calib", photo_dir, "-o", out, "--preset", "imagenet",
                  "--input-size", "32")  # fmt: skip
    assert_clean_error(res, "already exists")


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_torchvision_through_cli(arch, photo_dir, tmp_path):
    out = tmp_path / f"{arch}.pt"
    res = run_cli("quantize", f"torchvision:{arch}", "--calib", photo_dir, "-o", out, "--input-size", "64",
                  "--num-calib", "8", "--batch-size", "4", "--speed-guard", "0", "--quiet")  # fmt: skip
    assert res.code == 0, res.stderr
    assert res.stdout == ""
    from ptsq import load

    m = load(out)
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
    assert sum(r["precision"] == "int8" for r in m.manifest["precision"]) > 20


def _bad_folder(tmp_path: Path) -> Path:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.jpg").write_bytes(b"not really a jpeg")
    (d / "b.png").write_bytes(b"")
    return d


def test_missing_calibration_folder(tmp_path):
    res = run_cli("quantize", spec("SmallNet"), "--calib", tmp_path / "nope", "-o", tmp_path / "o.pt")
    assert_clean_error(res, "does not exist")
    assert not (tmp_path / "o.pt").exists()


def test_empty_calibration_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    res = run_cli("quantize", spec("SmallNet"), "--calib", tmp_path / "empty", "-o", tmp_path / "o.pt",
                  "--preset", "imagenet", "--input-size", "32")  # fmt: skip
    assert_clean_error(res, "empty")
    assert not (tmp_path / "o.pt").exists()


def test_folder_without_readable_images(tmp_path):
    d = _bad_folder(tmp_path)
    before = tree_digest(d)
    res = run_cli("quantize", spec("SmallNet"), "--calib", d, "-o", tmp_path / "o.pt", "--preset", "imagenet",
                  "--input-size", "32")  # fmt: skip
    assert_clean_error(res, "could be read")
    assert not (tmp_path / "o.pt").exists()
    assert tree_digest(d) == before


def test_some_unreadable_images_are_skipped_and_named(tmp_path, small_weights):
    d = tmp_path / "mixed"
    write_photos(d, 8)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    res = run_cli("quantize", spec("SmallNet"), "--weights", small_weights, "--calib", d, "-o", tmp_path / "o.pt",
                  "--preset", "imagenet", "--input-size", "32", "--batch-size", "4", "--json")  # fmt: skip
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["calibration"]["skipped"] == 1
    assert any("broken.jpg" in w for w in data["warnings"])


def test_unknown_torchvision_name_suggests(tmp_path, photo_dir):
    res = run_cli("quantize", "torchvision:resnet181", "--calib", photo_dir, "-o", tmp_path / "o.pt")
    assert_clean_error(res, "resnet181")
    assert "resnet18" in res.stderr.split("hint:")[1]


def test_weights_for_another_architecture(tmp_path, photo_dir):
    w = tmp_path / "face.pth"
    torch.save(FaceNet().state_dict(), w)
    res = run_cli("quantize", spec("SmallNet"), "--weights", w, "--calib", photo_dir, "-o", tmp_path / "o.pt")
    assert_clean_error(res, "do not match", "missing", "unexpected")
    assert not (tmp_path / "o.pt").exists()


def test_pickled_module_needs_trust_pickle(tmp_path, photo_dir):
    p = tmp_path / "whole.pt"
    torch.save(SmallNet().eval(), p)
    res = run_cli("quantize", p, "--calib", photo_dir, "-o", tmp_path / "o.pt", "--input-size", "32")
    assert_clean_error(res, "pickled")
    assert "--trust-pickle" in res.stderr
    res = run_cli("quantize", p, "--trust-pickle", "--calib", photo_dir, "-o", tmp_path / "o.pt",
                  "--preset", "imagenet", "--input-size", "32", "--num-calib", "8", "--quiet")  # fmt: skip
    assert res.code == 0, res.stderr
    assert (tmp_path / "o.pt").exists()


def test_torchscript_model_is_refused(tmp_path, photo_dir):
    p = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.script(SmallNet().eval()), p)
    res = run_cli("quantize", p, "--calib", photo_dir, "-o", tmp_path / "o.pt")
    assert_clean_error(res, "TorchScript")


def test_untraceable_model_names_the_line(tmp_path, photo_dir):
    res = run_cli("quantize", spec("RootUntraceable"), "--calib", photo_dir, "-o", tmp_path / "o.pt",
                  "--preset", "imagenet", "--input-size", "16", "--num-calib", "4", "--strict", "--quiet")  # fmt: skip
    assert_clean_error(res, "y.sum() > 0", "models.py")
    assert "cannot trace" in res.stderr or "cannot capture" in res.stderr  # FX, or PT2E where torch.ao is gone
    assert not (tmp_path / "o.pt").exists()


def test_input_size_the_model_rejects(tmp_path, photo_dir):
    res = run_cli("quantize", spec("FixedSizeNet"), "--calib", photo_dir, "-o", tmp_path / "o.pt",
                  "--preset", "imagenet", "--input-size", "32", "--num-calib", "4")  # fmt: skip
    assert_clean_error(res, "rejects inputs of shape", "(1, 3, 32, 32)")


def test_output_folder_missing(tmp_path, photo_dir):
    res = run_cli("quantize", spec("SmallNet"), "--calib", photo_dir, "-o", tmp_path / "no" / "o.pt")
    assert_clean_error(res, "does not exist")


def test_unknown_backend_lists_supported(tmp_path, photo_dir):
    res = run_cli("quantize", spec("SmallNet"), "--calib", photo_dir, "-o", tmp_path / "o.pt", "--backend", "tpu")
    assert_clean_error(res, "unknown backend")
    assert "x86" in res.stderr and "qnnpack" in res.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_during_calibration_writes_nothing(sig, tmp_path, repo_root):
    d = tmp_path / "many"
    write_photos(d, 400, size=(160, 160))
    out = tmp_path / "o.pt"
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    cmd = [sys.executable, "-m", "ptsq.cli.main", "quantize", "torchvision:resnet50", "--calib", str(d),
           "-o", str(out), "--input-size", "160", "--num-calib", "400", "--batch-size", "8"]  # fmt: skip
    # a shell's background job (`make test &`) starts with SIGINT ignored, and children inherit that:
    # restore the default a foreground command has, so Ctrl-C reaches it
    sigint = functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=sigint)
    # wait until the command is past imports and model loading (slow on a loaded machine), then some more:
    # calibrating 400 images through resnet50 takes minutes
    first = proc.stderr.readline()
    assert first.startswith("info: quantizing"), first + proc.communicate()[1]
    time.sleep(3)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, f"rc {proc.returncode}; stdout: {stdout[-500:]!r}; stderr: {stderr[-500:]!r}"
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.pt")]
