"""Proof you can trust (issue 14): the speed and self-check targets, measured.

Run from the repository root: ``python -m benchmarks.bench_proof`` (``make bench ONLY=proof``).

* **Speed**: timm ``vgg11_bn`` (random weights, BatchNorm settled on photos, 224x224) and EfficientNet-Lite1
  (real weights, ``effnet-lite`` preprocessing at 240x240), FX engine, default QuantConfig (``--threads 1``):
  quantize's own whole-model speed check (minimum process CPU time of the saved artifact against eager fp32,
  interleaved), then an independent re-measurement here (``ptsq.bench.benchmark``: medians of interleaved
  wall-clock runs of the loaded artifact). Lite1 also: top-1 agreement with fp32 on the 20 labelled photos.
* **Self-check**: EfficientNet-Lite0/1, calibrated on 128 seeded crops of packaged photos (32 held back):
  does the check's verdict agree with top-1 agreement on the 20 labelled ImageNet photos (good: >= 0.9)?
* **ONNX self-check honesty**: for each reference model, the ONNX engine's self-check SQNR (held-back samples)
  against the SQNR on fresh samples of the same distribution, never seen by calibration or the check.

Options: ``--only speed,check,onnx`` (parts), ``--quick`` (smoke run: figures not meaningful).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import ptsq
from benchmarks._models import settle_bn
from benchmarks._results import write_section
from ptsq.bench import Candidate, benchmark
from ptsq.data import CalibrationImages, Preprocess, decode_image, preset
from ptsq.fidelity import fidelity, flatten_outputs
from ptsq.modes.speed import time_pair

# the figures before this work (its author's runs on this machine class)
BEFORE = {
    "vgg11_bn": "fp32 744 ms, int8 1,313 ms (0.57x), nothing said",
    "efficientnet_lite1": "fp32 117 ms, int8 148 ms (0.79x), nothing said; check POOR, agreement 0.500 on 4 images",
}
TARGET_SPEEDUP = 1.5


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def _photos(root: Path, n: int, seed: int) -> Path:
    from examples.reference import imagenet

    folder = root / f"photos_{seed}"
    imagenet.write_calibration_photos(folder, n=n, seed=seed)
    return folder


def _quantize(model: nn.Module, batches: list[Any], pre: Preprocess | None, config: ptsq.QuantConfig) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ptsq.quantize(model, batches, config, preprocess=pre, progress=False)


def _logits(model: Any, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return flatten_outputs(model(x))[-1].float()


# ------------------------------------------------------------------------------------------- speed
def _vgg(photos: Path) -> tuple[nn.Module, Preprocess]:
    import timm

    pre = preset("imagenet", size=(224, 224))
    torch.manual_seed(0)
    model = timm.create_model("vgg11_bn", pretrained=False)
    settle_bn(model, list(CalibrationImages(photos, pre, num=32, batch_size=16, seed=1)))
    return model.eval(), pre


def _lite1(photos: Path) -> tuple[nn.Module, Preprocess]:
    from examples.reference import imagenet

    return imagenet.efficientnet_lite1(), preset("effnet-lite", size=(240, 240))


def speed_part(photos: Path, n_calib: int, runs: int) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    from examples.reference import imagenet

    rows, raw = [], []
    for name, make in (("vgg11_bn", _vgg), ("efficientnet_lite1", _lite1)):
        t0 = time.perf_counter()
        torch.set_num_threads(2)
        model, pre = make(photos)
        calib = list(CalibrationImages(photos, pre, num=n_calib, batch_size=16, seed=0))
        qm = _quantize(model, calib, pre, ptsq.QuantConfig())
        speed = qm.summary()["speed"]
        pair = speed["pairs"][0]
        with tempfile.TemporaryDirectory() as d:
            art = ptsq.load(qm.save(Path(d) / f"{name}.pt"))
            x = calib[0][:1].contiguous()
            again = time_pair(model, art.module, (x,), 1, runs)  # the check's method, on a fresh reload
            res = benchmark(
                [Candidate("fp32", model, kind="fp32"), Candidate("int8", art.module, kind="int8")],
                lambda bs, x=x: (x,), threads=(1,), batch_sizes=(1,), warmup=3, runs=runs, progress=False,
            )  # fmt: skip
        t = {r.label: r for r in res.timings}
        agree = "–"
        if name == "efficientnet_lite1":
            samples = imagenet.imagenet_samples()
            xs = torch.stack([decode_image(p, pre) for p, _ in samples])
            fid = fidelity(_logits(model, xs), _logits(qm.module, xs), output="scores")
            agree = f"{fid.agree}/{fid.compared}"
        fp32_layers = [r["name"] for r in qm.manifest["precision"] if r["precision"] == "fp32"]
        rows.append([
            name, "x".join(str(v) for v in x.shape[1:]), pair["fp32_ms"], pair["int8_ms"], f"{pair['speedup']:.2f}x",
            round(again.fp32_ms, 2), round(again.int8_ms, 2), f"{again.speedup:.2f}x", f"{t['int8'].speedup:.2f}x",
            f"≥ {TARGET_SPEEDUP}x", "yes" if min(pair["speedup"], again.speedup) >= TARGET_SPEEDUP else "NO",
            speed["verdict"], len(speed["rounds"]), agree, BEFORE[name],
        ])  # fmt: skip
        raw.append({"name": name, "speed": speed, "timings": [vars(r) for r in res.timings],
                    "fp32_layers": fp32_layers, "notes": qm.manifest.get("notes", []),
                    "seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
        print(f"  {name}: check {pair['speedup']:.2f}x, re-timed {again.speedup:.2f}x", file=sys.stderr)
    return rows, raw


SPEED_COLUMNS = [
    "model", "input", "fp32 ms (check)", "int8 ms (check)", "speed-up (check)", "fp32 ms (re-timed)",
    "int8 ms (re-timed)", "speed-up (re-timed)", "speed-up (median wall)", "target", "met", "verdict",
    "timed rounds", "agreement (20 photos)", "before (the issue)",
]  # fmt: skip


# ------------------------------------------------------------------------------------------- check
def check_part(photos: Path, n_calib: int) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    from examples.reference import imagenet

    rows, raw = [], []
    samples = imagenet.imagenet_samples()
    labels = torch.tensor([lab for _, lab in samples])
    for name, build, size in (("efficientnet_lite0", imagenet.efficientnet_lite0, 224),
                              ("efficientnet_lite1", imagenet.efficientnet_lite1, 240)):  # fmt: skip
        torch.set_num_threads(2)
        model, pre = build(), preset("effnet-lite", size=(size, size))
        calib = list(CalibrationImages(photos, pre, num=n_calib, batch_size=16, seed=0))
        qm = _quantize(model, calib, pre, ptsq.QuantConfig(speed={"check": False}))
        c = qm.fidelity
        xs = torch.stack([decode_image(p, pre) for p, _ in samples])
        a, b = _logits(model, xs), _logits(qm.module, xs)
        photo = fidelity(a, b, output="scores")
        photos_good = (photo.top1_agreement or 0) >= 0.9
        agrees = c["verdict"] in ("good", "poor") and (c["verdict"] == "good") == photos_good
        f32, i8 = (float((t.argmax(1) == labels).double().mean()) for t in (a, b))
        top1 = f"{f32:.2f} / {i8:.2f}"
        rows.append([
            name, c["samples"], round(c["sqnr_db"], 1), f"{c['agree']}/{c['compared']}",
            f"{c['clear_agree']}/{c['compared']}", c["verdict"], f"{photo.agree}/{photo.compared}", top1,
            "yes" if agrees else "NO",
        ])  # fmt: skip
        raw.append({"name": name, "check": c, "photos": photo.to_dict()})
        print(f"  {name}: check {c['verdict']}, photos {photo.agree}/{photo.compared}", file=sys.stderr)
    return rows, raw


CHECK_COLUMNS = [
    "model", "held-back samples", "check SQNR dB", "check top-1 agreement", "apart from near-ties", "verdict",
    "agreement on 20 photos", "top-1 fp32 / int8 (photos)", "verdict agrees",
]  # fmt: skip


# -------------------------------------------------------------------------------------------- onnx
def _reference_models(photos: Path, fresh: Path, quick: bool) -> list[tuple[str, Callable[[int], Any]]]:
    """(name, make) where make(seed) -> (model, preprocess, calibration batches, fresh batches); the seed
    picks the calibration subset's order, and so which samples the self-check holds back."""
    from examples.reference import digits, faces, fashion, imagenet

    def images(build: Callable[[], nn.Module], pre: Preprocess, seed: int, n: int = 128) -> Any:
        cal = list(CalibrationImages(photos, pre, num=n, batch_size=16, seed=seed))
        new = list(CalibrationImages(fresh, pre, num=128, batch_size=16, seed=0))
        return build(), pre, cal, new

    def tv(name: str, seed: int) -> Any:
        import torchvision.models as tvm

        pre = preset("imagenet", size=(224, 224))
        torch.manual_seed(0)
        model = settle_bn(tvm.get_model(name, weights=None), list(CalibrationImages(photos, pre, num=32, seed=1)))
        return images(lambda: model, pre, seed, 96)

    def split(x: torch.Tensor, seed: int, n: int) -> list[torch.Tensor]:
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))][:n]
        return [x[i : i + 32] for i in range(0, len(x), 32)]

    def mnist(seed: int) -> Any:
        imgs, _ = digits.mnist_5k()  # sorted by class: shuffled once, so both sets hold every digit
        imgs = imgs[np.random.default_rng(0).permutation(len(imgs))]
        x = digits.preprocess(imgs[:512] if quick else imgs[:1024])
        return digits.mnist_cnn(), None, split(x[:256], seed, 256), split(x[256:], 0, len(x) - 256)

    def fash(seed: int) -> Any:
        train, _ = fashion.fashion_train_subset(256, seed=seed)
        test, _ = fashion.fashion_test()
        return (
            fashion.fashion_net(),
            None,
            split(fashion.preprocess(train), seed, 256),
            split(fashion.preprocess(test[:512]), 0, 512),
        )

    rnet_pre = Preprocess(**faces.preprocess_spec(faces.RNET_SIZE))
    onet_pre = Preprocess(**faces.preprocess_spec(faces.ONET_SIZE))
    lite0_pre = preset("effnet-lite", size=(224, 224))
    lite1_pre = preset("effnet-lite", size=(240, 240))
    return [
        ("efficientnet_lite0", lambda s: images(imagenet.efficientnet_lite0, lite0_pre, s)),
        ("efficientnet_lite1", lambda s: images(imagenet.efficientnet_lite1, lite1_pre, s)),
        ("mtcnn_rnet", lambda s: images(faces.rnet, rnet_pre, s)),
        ("mtcnn_onet", lambda s: images(faces.onet, onet_pre, s)),
        ("mnist_cnn", mnist),
        ("fashion_resnet", fash),
        ("resnet18", lambda s: tv("resnet18", s)),
        ("mobilenet_v2", lambda s: tv("mobilenet_v2", s)),
    ]


def onnx_part(photos: Path, fresh: Path, quick: bool, seeds: int) -> tuple[list[list[Any]], list[dict[str, Any]]]:
    rows, raw = [], []
    for name, make in _reference_models(photos, fresh, quick):
        runs = []
        for seed in range(seeds):
            torch.set_num_threads(2)
            try:
                model, pre, cal, new = make(seed)
                config = ptsq.QuantConfig(engine="onnx", seed=seed, speed={"check": False})
                qm = _quantize(model.eval(), cal, pre, config)
            except Exception as exc:  # a model that is not available here is a row, not a crash
                runs = [f"not measured: {str(exc).splitlines()[0][:80]}"]
                break
            with torch.inference_mode():
                ref = torch.cat([torch.cat([t.flatten(1) for t in flatten_outputs(model(x))], 1) for x in new])
                got = torch.cat([torch.cat([t.flatten(1) for t in flatten_outputs(qm.module(x))], 1) for x in new])
            fresh_db = fidelity(ref, got).sqnr_db
            runs.append({"seed": seed, "check_db": qm.fidelity["sqnr_db"], "samples": qm.fidelity["samples"],
                         "fresh_db": fresh_db, "fresh_samples": len(ref)})  # fmt: skip
            print(
                f"  {name} seed {seed}: check {runs[-1]['check_db']:.2f} dB, fresh {fresh_db:.2f} dB", file=sys.stderr
            )
        if runs and isinstance(runs[0], str):
            rows.append([name, "–", "–", "–", "–", "–", runs[0]])
            continue
        diffs = [r["check_db"] - r["fresh_db"] for r in runs]
        mean = statistics.fmean(diffs)
        rows.append([
            name, runs[0]["samples"], " / ".join(f"{r['check_db']:.2f}" for r in runs), runs[0]["fresh_samples"],
            " / ".join(f"{r['fresh_db']:.2f}" for r in runs), " / ".join(f"{d:+.2f}" for d in diffs), f"{mean:+.2f}",
        ])  # fmt: skip
        raw.append({"name": name, "runs": runs, "mean_difference_db": mean})
    means = [r["mean_difference_db"] for r in raw]
    if means:
        signed, absolute = statistics.median(means), statistics.median(abs(m) for m in means)
        verdict = "met" if abs(signed) <= 1 else "NOT met"
        rows.append(["median over the models", "", "", "", "", f"|d|: {absolute:.2f}",
                     f"{signed:+.2f} dB (target within 1 dB: {verdict})"])  # fmt: skip
    return rows, raw


ONNX_COLUMNS = [
    "model", "held-back samples", "check SQNR dB (per split)", "fresh samples", "fresh SQNR dB (per split)",
    "check − fresh dB (per split)", "mean check − fresh dB",
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="speed,check,onnx", help="parts: speed, check, onnx")
    ap.add_argument("--quick", action="store_true", help="smoke run: few images and runs; figures not meaningful")
    ap.add_argument("--runs", type=int, default=20, help="timed runs of the independent re-measurement")
    ap.add_argument("--seeds", type=int, default=3, help="ONNX part: calibration splits per model (held-back sets)")
    args = ap.parse_args(argv)
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    n_calib = 64 if args.quick else 128
    runs = 5 if args.quick else args.runs
    command = "python -m benchmarks.bench_proof" + (" --quick" if args.quick else "")
    with tempfile.TemporaryDirectory(prefix="ptsq-proof-") as d:
        photos = _photos(Path(d), n_calib, seed=0)
        common = [
            f"1-minute load average when written: {_load()} on this shared machine (other jobs running): absolute "
            "times drift, ratios within a row hold (interleaved runs; the check's are minimum CPU times).",
            "Calibration: seeded crops of packaged photos (skimage, sklearn, matplotlib), none of them an evaluation "
            "photo; the self-check holds back the last 32 samples.",
        ]
        if "speed" in parts:
            t0 = time.perf_counter()
            rows, raw = speed_part(photos, n_calib, runs)
            write_section(
                "proof_speed", title="Speed you can trust: int8 vs fp32 at 1 thread, as deployed",
                columns=SPEED_COLUMNS, rows=rows, command=command + " --only speed", order=12,
                notes=[*common,
                    "check = quantize's own whole-model speed check (summary()['speed']): the saved TorchScript "
                    "artifact loaded back against eager fp32, batch 1, 1 thread, minimum process CPU time over "
                    "interleaved runs; re-timed = the same method again afterwards on a fresh load of the saved "
                    "artifact; median wall = ptsq.bench's medians of interleaved wall-clock runs. This script runs "
                    "under nice on a machine shared with other jobs: wall-clock figures then measure the scheduler as "
                    "much as the models (that is why the verdict uses CPU time).",
                    "vgg11_bn: its pre_logits block is untraceable (a Python if on the input shape): it runs as fp32 "
                    "Python with its two convs int8 on their own (they are 2/3 of the fp32 time).",
                    f"Script time: {(time.perf_counter() - t0) / 60:.1f} min.",
                ],
                extra={"models": raw},
            )  # fmt: skip
        if "check" in parts:
            rows, raw = check_part(photos, n_calib)
            write_section(
                "proof_check", title="Self-check verdicts against the 20 labelled photos",
                columns=CHECK_COLUMNS, rows=rows, command=command + " --only check", order=13,
                notes=[*common,
                    "The verdict needs 32 held-back samples; class scores are judged by top-1 agreement apart from "
                    "near-ties (fp32 rates int8's class within 0.1 probability of its own), >= 0.9 is good; the "
                    "photos agree when >= 0.9 of them keep fp32's top-1 (docs/accuracy.md).",
                ],
                extra={"models": raw},
            )  # fmt: skip
        if "onnx" in parts:
            fresh = _photos(Path(d), 128, seed=7)
            rows, raw = onnx_part(photos, fresh, args.quick, args.seeds)
            write_section(
                "proof_onnx_check", title="ONNX engine: self-check SQNR against fresh samples",
                columns=ONNX_COLUMNS, rows=rows, command=command + " --only onnx", order=14,
                notes=[*common,
                    "fresh = 128 other seeded crops (seed 7) for the image models, unseen MNIST digits / Fashion "
                    "test images for the small ones: the same distribution, never calibrated on nor checked. Each "
                    "model is quantized on several calibration splits (seeds: which samples are held back); the "
                    "check's 32 samples are a small set, so one split alone can differ from fresh data by ~2 dB "
                    "either way (on Lite0's first split the FX engine's check sat 1.8 dB above 96 fresh crops too: "
                    "the samples, not the engine).",
                ],
                extra={"models": raw},
            )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
