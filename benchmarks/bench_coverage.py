"""Coverage suite: does ptsq quantize real architectures with no edits, and does int8 pay off?

For every torchvision classification model, torchvision's segmentation and detection models, and a
sample of timm architectures across families (random weights, no downloads), each in its own child
process with a time limit:

* quantize with the default QuantConfig (FX engine) on a few random calibration batches;
* int8 compute share: conv/linear multiply-accumulates counted with forward hooks on the converted
  model (quantized modules = int8, float modules = fp32); a model with no int8 compute counts as
  NOT quantized, whatever quantize() returned;
* fp32 vs int8 latency at 1 thread, batch 1, interleaved, medians, of the saved artifact loaded back
  (what users run), measured here independently of quantize's own speed check;
* quantize's speed verdict (``summary()["speed"]``): a model whose artifact is slower here while quantize
  said "faster" is counted as *slower without a word* (the number the suite must keep at 0);
* output SQNR int8 vs fp32 on one fixed input.

Results are merged into ``benchmarks/results/coverage.json`` after every model (``--only`` re-runs
a few and keeps the rest), then rendered to COVERAGE.md. ``make coverage`` runs everything.

    python -m benchmarks.bench_coverage                   # everything (long: ~1 h on 2 cores)
    python -m benchmarks.bench_coverage --only resnet18,tv_det:ssdlite320_mobilenet_v3_large
    python -m benchmarks.bench_coverage --limit 5 --timeout 120
    python -m benchmarks.bench_coverage --ray auto --workers 2   # models as Ray tasks (pip install 'ptsq[ray]')
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._models import settle_bn

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "coverage.json"
REPORT = HERE.parent / "COVERAGE.md"
SMALL = 64  # input side for models that take any size: keeps the suite within an hour on 2 cores
# the product default (QuantConfig.speed_guard) unless --speed-guard says otherwise (0 = off)
_SETTINGS: dict[str, float] = {"speed_guard": 1.5, "speed_check": 1.0}
MAX_PARAMS_M = 50.0  # larger models are listed as not run (time and memory budget), never dropped

# timm: one or two architectures per family, random weights (pretrained=False)
TIMM = [
    "resnet50d", "seresnext26d_32x4d", "resnext26ts", "efficientnet_b0", "efficientnet_lite0",
    "mobilenetv3_large_100", "mobilenetv4_conv_small", "ghostnet_100", "regnety_004", "dla34", "dpn68",
    "hrnet_w18_small", "cspdarknet53", "xception41", "mixnet_s", "fbnetc_100", "rexnet_100", "lcnet_050",
    "tinynet_a", "vit_tiny_patch16_224", "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224",
    "convnext_atto", "convnextv2_atto", "efficientformer_l1", "levit_128s", "mobilevit_xxs", "poolformer_s12",
    "resmlp_12_224", "pvt_v2_b0", "edgenext_xx_small", "repvgg_a0", "res2net50_14w_8s", "selecsls42b",
    "nf_regnet_b0", "fastvit_t8", "efficientvit_b0", "ese_vovnet19b_dw", "skresnet18", "resnest14d",
    "xcit_nano_12_p16_224", "repvit_m1", "hgnetv2_b0", "mobileone_s0", "halonet26t", "tiny_vit_5m_224",
    "starnet_s1", "inception_v4",
]  # fmt: skip


@dataclass
class Entry:
    key: str  # "tv:resnet18", "timm:dla34", "tv_seg:...", "tv_det:..."
    family: str
    task: str = "classification"
    size: int = SMALL
    extra: dict[str, Any] = field(default_factory=dict)


# models that only run at their native size: halo attention needs 8x8 blocks at stride 32;
# EfficientFormer's attention biases stay sized for 224 whatever img_size says
NATIVE_SIZE = {"halonet26t": 256, "efficientformer_l1": 224}


def entries() -> list[Entry]:
    from torchvision import models as tvm

    out: list[Entry] = []

    def gflops(name: str) -> float:  # from torchvision's weight metadata: no download
        try:
            return min(float(w.meta.get("_ops", 1e9)) for w in tvm.get_model_weights(name))
        except Exception:
            return 1e9

    # cheapest first, so that a run cut short by its time budget has covered the most architectures
    for name in sorted(tvm.list_models(module=tvm), key=gflops):
        if name.startswith("vit_"):  # fixed size, but a constructor option: same architecture, fewer tokens
            patch = int(name.rsplit("_", 1)[1])
            out.append(
                Entry(
                    f"tv:{name}",
                    "torchvision",
                    size=patch * (SMALL // patch),
                    extra={"image_size": patch * (SMALL // patch)},
                )
            )
            continue
        size = 224 if name.startswith("maxvit") else 96 if "inception" in name else SMALL
        out.append(Entry(f"tv:{name}", "torchvision", size=size))
    for name in tvm.list_models(module=tvm.segmentation):
        out.append(Entry(f"tv_seg:{name}", "torchvision", task="segmentation"))
    for name in tvm.list_models(module=tvm.detection):
        extra = {} if name.startswith("ssd") else {"min_size": 160, "max_size": 160}
        out.append(Entry(f"tv_det:{name}", "torchvision", task="detection", size=160, extra=extra))
    import timm

    tim: list[Entry] = []
    for name in TIMM:
        cfg = timm.get_pretrained_cfg(name)
        fixed = bool(cfg and cfg.fixed_input_size) and name not in NATIVE_SIZE
        size = NATIVE_SIZE.get(name) or (96 if "inception" in name else SMALL)
        # fixed-size models: a smaller img_size is a constructor option (same architecture, fewer tokens)
        extra = {"img_size": 112} if fixed else {}
        tim.append(Entry(f"timm:{name}", name.split("_")[0], size=112 if fixed else size, extra=extra))
    # interleave the zoos so that a partial run (--limit, or a stopped one) samples all of them
    mixed: list[Entry] = []
    rest = [e for e in out if e.task != "classification"]
    tv = [e for e in out if e.task == "classification"]
    for i in range(max(len(tv), len(tim))):
        mixed += tv[i : i + 1] + tim[i : i + 1]
    return mixed + rest


# ---------------------------------------------------------------------------- child process


def _build(e: Entry) -> Any:
    import torch

    torch.manual_seed(0)
    src, name = e.key.split(":", 1)
    if src == "timm":
        import timm

        try:
            return timm.create_model(name, pretrained=False, **e.extra)
        except Exception:  # img_size not accepted: the pretrained config's size
            cfg = timm.get_pretrained_cfg(name)
            e.size = cfg.input_size[-1] if cfg else 224
            return timm.create_model(name, pretrained=False)
    from torchvision import models as tvm

    if src == "tv":
        return tvm.get_model(name, weights=None, **e.extra)
    kw: dict[str, Any] = {"weights": None, "weights_backbone": None, **e.extra}
    if src == "tv_seg" and "aux" not in name:
        kw["aux_loss"] = None
    return tvm.get_model(name, **kw)


def _inputs(e: Entry, batch: int, seed: int) -> tuple[Any, ...]:
    import torch

    g = torch.Generator().manual_seed(seed)
    if e.task == "detection":
        return ([torch.rand(3, e.size, e.size, generator=g) for _ in range(batch)],)
    return (torch.randn(batch, 3, e.size, e.size, generator=g),)


def _macs(module: Any, args: tuple[Any, ...]) -> dict[str, float]:
    """Conv/linear multiply-accumulates of one forward, split by whether the layer runs int8."""
    import torch
    from torch import nn

    totals = {"int8": 0.0, "fp32": 0.0}
    hooks = []

    def hook(mod: Any, _inp: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            return
        qual = type(mod).__module__.startswith("torch.ao.nn.quantized") or "quantized" in type(mod).__module__
        w = mod.weight() if callable(getattr(mod, "weight", None)) else mod.weight
        if w is None:
            return
        if w.dim() >= 3:  # conv: per output element, in_ch/groups * kernel
            per = w[0].numel()
        else:
            per = w.shape[1]
        n = out.numel() if not out.is_quantized else out.dequantize().numel()
        totals["int8" if qual else "fp32"] += float(n * per)

    for m in module.modules():
        name = type(m).__name__
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) or (
            "quantized" in type(m).__module__ and ("Conv" in name or "Linear" in name)
        ):
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            module(*args)
    finally:
        for h in hooks:
            h.remove()
    return totals


def _latency(fp: Any, q: Any, args: tuple[Any, ...], runs: int, budget_s: float) -> tuple[float, float]:
    import torch

    times: dict[str, list[float]] = {"fp": [], "q": []}
    with torch.inference_mode():
        fp(*args)
        q(*args)
        t_start = time.perf_counter()
        for i in range(runs):
            for tag, m in (("fp", fp), ("q", q)) if i % 2 == 0 else (("q", q), ("fp", fp)):
                t0 = time.perf_counter()
                m(*args)
                times[tag].append(time.perf_counter() - t0)
            if i >= 2 and time.perf_counter() - t_start > budget_s:
                break
    return statistics.median(times["fp"]) * 1e3, statistics.median(times["q"]) * 1e3


def _artifact(qm: Any, e: Entry) -> tuple[Any, str]:
    """The saved artifact loaded back (what users run), or the in-memory module if it cannot be saved."""
    import tempfile

    import ptsq

    try:
        with tempfile.TemporaryDirectory(prefix="ptsq-coverage-") as d:
            path = qm.save(Path(d) / f"{e.key.replace(':', '_')}.pt")
            return ptsq.load(path).module, "artifact"
    except Exception:  # e.g. a model TorchScript cannot trace: the speed check then had nothing to time either
        return qm.module, "in-memory module (the artifact could not be saved)"


def run_one(e: Entry) -> dict[str, Any]:
    import torch

    import ptsq
    from ptsq.config import QuantConfig
    from ptsq.errors import first_line
    from ptsq.fidelity import flatten_outputs, sqnr_db

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    rec: dict[str, Any] = {"key": e.key, "family": e.family, "task": e.task}
    t0, cpu0 = time.perf_counter(), time.process_time()
    stage = "build"
    try:
        model = _build(e).eval()
        rec["input"] = [3, e.size, e.size]
        if e.extra:
            rec["options"] = e.extra
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rec["params_m"] = round(params, 1)
        if params > MAX_PARAMS_M:
            rec.update(status="not run", reason=f"{params:.0f} M parameters is over the suite's budget")
            return rec
        stage = "fp32 forward"
        calib = [_inputs(e, 2, seed) for seed in range(4)]
        settle_bn(model, calib)
        fixed = _inputs(e, 1, 99)
        with torch.inference_mode():
            ref = model(*fixed)
        stage = "quantize"
        cfg = QuantConfig(speed_guard=_SETTINGS["speed_guard"], speed={"check": bool(_SETTINGS["speed_check"])})
        qm = ptsq.quantize(model, calib, progress=False, config=cfg)
        rec["quantize_s"] = round(time.perf_counter() - t0, 1)
        counts = qm.summary()["layers"]
        rec["layers"] = counts
        rec["fp32_reasons"] = sorted(
            {r.get("reason", "") for r in qm.manifest["precision"] if r["precision"] == "fp32"}
        )[:8]
        rec["notes"] = [n[:300] for n in qm.manifest.get("notes", [])][:10]
        speed = qm.manifest.get("speed") or {}
        rec["verdict"] = speed.get("verdict")
        rec["check_speedup"] = (speed.get("speedup") or {}).get("1")
        rec["speed_changes"] = speed.get("changes", [])[:4]
        stage = "measure"
        macs = _macs(qm.module, fixed)
        total = macs["int8"] + macs["fp32"]
        rec["gmacs"] = round(total / 1e9, 3)
        rec["int8_share"] = round(macs["int8"] / total, 4) if total else 0.0
        with torch.inference_mode():
            out = qm.module(*fixed)
        r, t = flatten_outputs(ref), flatten_outputs(out)
        if sum(a.numel() for a in r) == 0:
            rec["sqnr_db"] = None  # e.g. a random-weight detector that returns no boxes: nothing to compare
        elif len(r) == len(t) and all(a.shape == b.shape for a, b in zip(r, t)):
            rec["sqnr_db"] = round(sqnr_db(torch.cat([a.flatten() for a in r]), torch.cat([b.flatten() for b in t])), 2)
        else:
            rec["sqnr_db"] = None  # e.g. detections: the number of boxes differs
        deployed, rec["timed"] = _artifact(qm, e)
        fp_ms, q_ms = _latency(model, deployed, fixed, runs=5, budget_s=5.0)
        rec.update(fp32_ms=round(fp_ms, 2), int8_ms=round(q_ms, 2), speedup=round(fp_ms / q_ms, 2))
        quantized = rec["int8_share"] > 0 and counts["int8"] > 0
        rec["status"] = "ok" if quantized else "fp32 only"
        if not quantized:
            rec["reason"] = "quantize() returned, but no conv/linear compute runs in int8"
    except Exception as exc:
        rec.update(status="failed", stage=stage, reason=f"{type(exc).__name__}: {first_line(exc)}"[:400])
        rec["trace_tail"] = traceback.format_exc().splitlines()[-4:]
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    rec["cpu_s"] = round(time.process_time() - cpu0, 1)  # this process's CPU: wall over CPU is the machine's load
    return rec


def _child(e: Entry, conn: Any) -> None:
    try:
        os.nice(0)
        conn.send(run_one(e))
    except BaseException as exc:  # report anything, even a crash while sending
        conn.send({"key": e.key, "family": e.family, "task": e.task, "status": "failed", "reason": repr(exc)[:400]})
    finally:
        conn.close()


def run_entry(e: Entry, speed_guard: float, speed_check: bool = True) -> dict[str, Any]:
    """:func:`run_one` in a Ray worker, which has not parsed this script's options."""
    _SETTINGS["speed_guard"] = speed_guard
    _SETTINGS["speed_check"] = float(speed_check)
    return run_one(e)


def run_on_ray(todo: list[Entry], args: Any, record: Any) -> None:
    """Each model as a Ray task (a crash or a hang is reported as that model's failure, as with --jobs)."""
    from ptsq.distributed.cluster import Cluster
    from ptsq.distributed.fanout import fan_out

    def done(i: int, out: Any) -> None:
        e = todo[i]
        rec = out.value if out.ok else {"key": e.key, "family": e.family, "task": e.task, "status": "failed",
                                        "stage": "?", "reason": out.error}  # fmt: skip
        record(e, rec)

    t0 = time.perf_counter()
    with Cluster(args.ray, args.workers, ship=[HERE]) as cluster:  # workers import this package
        print(f"ray: {cluster.describe()} (connected in {time.perf_counter() - t0:.1f} s), {cluster.slots()} model(s)"
              " at once", file=sys.stderr, flush=True)  # fmt: skip
        jobs = [(e.key, (e, args.speed_guard, not args.no_speed_check)) for e in todo]
        fan_out(run_entry, jobs, cluster, timeout=args.timeout, retries=1, on_result=done)


def run_isolated(e: Entry, timeout: float) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(e, child), daemon=True)
    t0 = time.perf_counter()
    p.start()
    child.close()
    rec: dict[str, Any] | None = None
    if parent.poll(timeout):
        try:
            rec = parent.recv()
        except EOFError:
            rec = None
    p.join(5)
    if p.is_alive():
        p.kill()
        p.join()
    if rec is None:
        why = (
            f"timed out after {timeout:.0f} s"
            if time.perf_counter() - t0 >= timeout
            else f"crashed (exit {p.exitcode})"
        )
        rec = {"key": e.key, "family": e.family, "task": e.task, "status": "failed", "stage": "?", "reason": why}
    return rec


# ---------------------------------------------------------------------------- summary + report


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ran = [r for r in rows if r["status"] != "not run"]
    ok = [r for r in ran if r["status"] == "ok"]
    faster = [r for r in ok if (r.get("speedup") or 0) > 1.0]
    shares = [r["int8_share"] for r in ok]
    # slower here, and quantize did not say so (verdict "faster", or no verdict recorded)
    unsaid = [r for r in ok if (r.get("speedup") or 0) < 1.0 and r.get("verdict") != "slower"]
    return {
        "models": len(rows),
        "ran": len(ran),
        "not_run": len(rows) - len(ran),
        "quantized": len(ok),
        "quantized_pct": round(100 * len(ok) / len(ran), 1) if ran else 0.0,
        "faster": len(faster),
        "faster_pct": round(100 * len(faster) / len(ran), 1) if ran else 0.0,
        "fp32_only": sum(r["status"] == "fp32 only" for r in ran),
        "said_slower": sum(r.get("verdict") == "slower" for r in ok),
        "slower_unsaid": len(unsaid),
        "slower_unsaid_models": [r["key"] for r in unsaid],
        "median_int8_share": round(statistics.median(shares), 3) if shares else None,
        "median_speedup": round(statistics.median([r["speedup"] for r in ok]), 2) if ok else None,
    }


def summary_line(s: dict[str, Any]) -> str:
    return (
        f"{s['quantized']}/{s['ran']} models quantized end to end with no edits ({s['quantized_pct']}%), "
        f"{s['faster']}/{s['ran']} faster in int8 at 1 thread ({s['faster_pct']}%), "
        f"{s['fp32_only']} ran entirely in fp32 (counted as not quantized); "
        + (
            f"quantize said 'slower' for {s['said_slower']}, and {s['slower_unsaid']} were slower here without "
            "quantize saying so; "
            if "slower_unsaid" in s
            else ""
        )
        + f"median int8 compute share {s['median_int8_share']}, median speed-up {s['median_speedup']}x"
        + (f"; {s['not_run']} not run (size or time budget; listed with the reason)" if s["not_run"] else "")
    )


def load_results(path: Path | None = None) -> dict[str, Any]:
    path = path or RESULTS
    if path.exists():
        return json.loads(path.read_text())
    return {"rows": []}


def save_results(data: dict[str, Any], path: Path | None = None) -> None:
    from ptsq.machine import machine_info

    path = path or RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    data["summary"] = summarize(data["rows"])
    data["date"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    data["machine"] = machine_info()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_coverage", description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated keys or names (e.g. resnet18,timm:dla34)")
    ap.add_argument("--limit", type=int, default=0, help="run at most this many models")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per model (child process is killed)")
    ap.add_argument(
        "--speed-guard", type=float, default=None, help="QuantConfig.speed_guard (default: ptsq's; 0 = off)"
    )
    ap.add_argument(
        "--no-speed-check", action="store_true", help="skip quantize's whole-model speed check (speed.check=False)"
    )
    ap.add_argument("--jobs", type=int, default=1, help="models measured at once (each at 1 thread)")
    ap.add_argument("--ray", default=None, help="run the models as Ray tasks: auto (a local instance) or HOST:PORT")
    ap.add_argument("--workers", type=int, default=None, help="with --ray: models at once (default: every CPU)")
    ap.add_argument("--reverse", action="store_true", help="run the list backwards (a second runner)")
    ap.add_argument("--resume", action="store_true", help="skip models already in the JSON")
    ap.add_argument("--task", default="", help="only models of this task: classification|segmentation|detection")
    ap.add_argument("--results", default="", help="write this JSON instead (a run beside another one)")
    ap.add_argument("--merge", default="", help="fold the rows of this JSON into the results, then render")
    ap.add_argument("--fill-missing", action="store_true", help="with --merge: list models never reached")
    ap.add_argument("--render-only", action="store_true", help="re-render COVERAGE.md from the JSON")
    args = ap.parse_args(argv)

    from benchmarks.coverage_report import render
    from ptsq.config import QuantConfig

    if args.speed_guard is None:
        args.speed_guard = QuantConfig().speed_guard
    _SETTINGS["speed_guard"] = args.speed_guard
    _SETTINGS["speed_check"] = float(not args.no_speed_check)
    if args.merge:
        data = load_results()
        rows = {r["key"]: r for r in data["rows"]}
        for extra in args.merge.split(","):
            rows.update({r["key"]: r for r in load_results(Path(extra))["rows"] if r["status"] != "failed"
                         or rows.get(r["key"], {}).get("status", "failed") == "failed"})  # fmt: skip
        if args.fill_missing:  # a run stopped by its time budget: list what it never reached
            for e in entries():
                rows.setdefault(e.key, {"key": e.key, "family": e.family, "task": e.task, "status": "not run",
                                        "reason": "the run's time budget ran out before this model"})  # fmt: skip
        data["rows"] = sorted(rows.values(), key=lambda r: r["key"])
        save_results(data)
    if args.render_only or args.merge:
        render(load_results(), REPORT)
        print(summary_line(load_results()["summary"]))
        return 0
    out_path = Path(args.results) if args.results else RESULTS
    todo = entries()
    if args.task:
        tasks = args.task.split(",")
        todo = sorted((e for e in todo if e.task in tasks), key=lambda e: tasks.index(e.task))
    if args.only:
        want = {w.strip() for w in args.only.split(",") if w.strip()}
        todo = [e for e in todo if e.key in want or e.key.split(":", 1)[1] in want]
    if args.reverse:
        todo = todo[::-1]
    if args.limit:
        todo = todo[: args.limit]
    # imported before forking: children start warm and run the code as it was when the suite started
    import timm  # noqa: F401
    import torch  # noqa: F401
    import torchvision.models.detection
    import torchvision.models.segmentation  # noqa: F401

    import ptsq.api
    import ptsq.engines.fx  # noqa: F401

    data = load_results(out_path)
    if args.resume:
        done = {r["key"] for r in data["rows"] if "timed out" not in r.get("reason", "")}
        todo = [e for e in todo if e.key not in done]
    elif not args.only and not args.limit:
        data["rows"] = []  # a full run starts afresh
    data["speed_guard"] = args.speed_guard
    by_key = {r["key"]: r for r in data["rows"]}
    t_all = time.perf_counter()
    count = [0]

    def record(e: Entry, rec: dict[str, Any]) -> None:
        count[0] += 1
        by_key[e.key] = rec
        data["rows"] = sorted(by_key.values(), key=lambda r: r["key"])
        save_results(data, out_path)
        extra = f" {rec.get('reason', '')}" if rec["status"] != "ok" else ""
        print(
            f"[{count[0]}/{len(todo)} {time.perf_counter() - t_all:.0f}s] {e.key}: {rec['status']} "
            f"share={rec.get('int8_share')} speedup={rec.get('speedup')} sqnr={rec.get('sqnr_db')} "
            f"({rec.get('seconds')} s){extra}",
            file=sys.stderr,
            flush=True,
        )

    if args.ray:
        run_on_ray(todo, args, record)
    else:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=max(1, args.jobs))
        futures = [pool.submit(run_isolated, e, args.timeout) for e in todo]
        for e, fut in zip(todo, futures):
            record(e, fut.result())
        pool.shutdown()
    data["wall_seconds"] = round(time.perf_counter() - t_all, 1)
    save_results(data, out_path)
    if out_path == RESULTS:
        render(data, REPORT)
    print(summary_line(data["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
