"""Dynamic quantization (all-MiniLM-L6-v2, an LSTM) and quantization-aware training (Fashion-MNIST).

Run from the repository root: ``python -m benchmarks.bench_modes [minilm] [lstm] [qat]`` (default: all).

- minilm: fp32 vs ptsq dynamic int8 embeddings of the 60 sentences in examples/reference/minilm.py
  (each sentence alone, no padding), the int8 models made by the CLI in both input routes (``--calib
  inputs.pt`` and ``--calib sentences.txt --tokenizer DIR``): per-sentence cosine, nearest neighbours;
  latency of the TorchScript artifacts at 1 thread, batch 1 and 8, 128 tokens. Also torch's plain recipe.
- lstm: a 2-layer LSTM sequence classifier (random weights: speed only), fp32 vs dynamic int8.
- qat: the Fashion-MNIST ResNet. Default int8 PTQ loses nothing here (0.9172 -> 0.9173), so the
  experiment uses a deliberately harder setting: 4-bit weights (per-channel symmetric, [-8, 7]) with
  8-bit activations. PTQ at that setting vs a short QAT fine-tune, both on the 10k test set.
"""

from __future__ import annotations

import copy
import os
import sys
import time
import warnings
from typing import Any

import torch
from torch import nn

from benchmarks._results import write_section

THREADS = 1
RUNS = int(os.environ.get("PTSQ_BENCH_RUNS", "30"))


def _trace(model: nn.Module, args: tuple[Any, ...]) -> torch.jit.ScriptModule:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, args, strict=False, check_trace=False)
        return torch.jit.freeze(traced.eval())


def _latency(cands: dict[str, Any], make: Any, batch_sizes: tuple[int, ...]) -> dict[tuple[str, int], float]:
    from ptsq.bench import Candidate, benchmark

    res = benchmark(
        [Candidate(k, f, kind="fp32" if k.startswith("fp32") else "int8") for k, f in cands.items()],
        make, threads=(THREADS,), batch_sizes=batch_sizes, warmup=3, runs=RUNS, check_outputs=False,
        progress=False,
    )  # fmt: skip
    return {(t.label, t.batch_size): t.median_ms for t in res.timings}


# ------------------------------------------------------------------------------------------------ MiniLM
MINILM_SPEC = "examples.reference.minilm:minilm_embedder"


def _cli_quantize(args: list[str]) -> dict[str, Any]:
    """``ptsq quantize MINILM_SPEC --mode dynamic ARGS --json`` in a child process, as a user runs it."""
    import json
    import subprocess

    cmd = [sys.executable, "-m", "ptsq.cli.main", "quantize", MINILM_SPEC, "--mode", "dynamic", *args, "--json"]
    path = os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))  # examples.* from the repo
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout)


def bench_minilm() -> None:
    from examples.reference.minilm import SENTENCES, TOPIC_OF, minilm_embedder, model_path, neighbours, tokenize
    from torch.ao.quantization import default_dynamic_qconfig
    from torch.ao.quantization import quantize_dynamic as plain_dynamic
    from transformers import AutoTokenizer

    import ptsq

    torch.set_num_threads(THREADS)
    fp32 = minilm_embedder()
    tok = AutoTokenizer.from_pretrained(model_path())
    singles = [(e["input_ids"], e["attention_mask"]) for e in (tok([s], return_tensors="pt") for s in SENTENCES)]
    example = tokenize(SENTENCES[:1], 128)
    plain = plain_dynamic(copy.deepcopy(fp32), {nn.Linear: default_dynamic_qconfig}, dtype=torch.qint8)

    def embed(m: Any) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([m(*a) for a in singles])

    ref = embed(fp32)
    topics = torch.tensor([hash(t) for t in TOPIC_OF])
    nn_ref = neighbours(ref)
    same_topic_fp32 = float((topics[nn_ref] == topics).float().mean())
    with tempfile_dir() as d:
        # the two CLI routes: token ids saved with torch.save, and sentences + the model's own tokenizer folder
        ids, mask = tokenize(SENTENCES, 128)
        torch.save({"input_ids": ids, "attention_mask": mask}, os.path.join(d, "inputs.pt"))
        with open(os.path.join(d, "sentences.txt"), "w") as f:
            f.write("\n".join(SENTENCES) + "\n")
        routes = {
            "ptsq CLI --calib inputs.pt": ["--calib", os.path.join(d, "inputs.pt")],
            "ptsq CLI --calib sentences.txt --tokenizer": ["--calib", os.path.join(d, "sentences.txt"), "--tokenizer",
                                                           model_path()],
        }  # fmt: skip
        runs, variants = {}, {}
        for label, args in routes.items():
            out = os.path.join(d, f"{len(runs)}.pt")
            runs[label] = _cli_quantize([*args, "-o", out])
            variants[label] = ptsq.load(out).module
        variants["torch quantize_dynamic (plain)"] = plain
        quality = {}
        for label, m in variants.items():
            e = embed(m)
            cos = (e * ref).sum(1)
            nn_q = neighbours(e)
            quality[label] = {
                "mean": float(cos.mean()),
                "min": float(cos.min()),
                "nn_same": float((nn_q == nn_ref).float().mean()),
                "topic": float((topics[nn_q] == topics).float().mean()),
            }
        cands = {
            "fp32": _trace(fp32, example),  # frozen TorchScript: the strict baseline
            "fp32 eager": fp32,  # what the user runs before quantizing
            **{k: v for k, v in variants.items() if k.startswith("ptsq")},
            "torch quantize_dynamic (plain)": _trace(plain, example),
        }

        def make(bs: int) -> tuple[torch.Tensor, torch.Tensor]:
            ids, mask = tokenize(SENTENCES[:bs], 128)
            return ids, torch.ones_like(mask)  # every one of the 128 tokens counts

        lat = _latency(cands, make, (1, 8))
    rows = []
    for label in ["fp32", "fp32 eager", *variants]:
        q = quality.get(label)
        b1, b8 = lat[(label, 1)], lat[(label, 8)]
        rows.append([
            label, round(b1, 1), round(lat[("fp32", 1)] / b1, 2), round(lat[("fp32 eager", 1)] / b1, 2),
            round(b8, 1), round(lat[("fp32", 8)] / b8, 2),
            f"{q['mean']:.4f}" if q else "1", f"{q['min']:.4f}" if q else "1",
            f"{q['nn_same']:.2f}" if q else "1", f"{q['topic']:.2f}" if q else f"{same_topic_fp32:.2f}",
        ])  # fmt: skip
    first = next(iter(runs.values()))
    fb = [r for r in first["fp32_layers"]]
    write_section(
        "modes_minilm",
        title="Dynamic int8: all-MiniLM-L6-v2 sentence embeddings, quantized from the CLI",
        columns=[
            "model",
            "ms b1",
            "speed-up b1 vs fp32 TorchScript (target ≥ 1.6x)",
            "speed-up b1 vs fp32 eager",
            "ms b8",
            "speed-up b8",
            "cosine mean (≥ 0.99)",
            "cosine min (≥ 0.97)",
            "same nearest neighbour",
            "NN in same topic",
        ],
        rows=rows,
        command="python -m benchmarks.bench_modes minilm",
        order=60,
        notes=[
            f"Both int8 models come from `ptsq quantize {MINILM_SPEC} --mode dynamic` in a child process: "
            "`--calib inputs.pt` (a dict of input_ids/attention_mask saved with torch.save, 60 sentences padded "
            "to 128 tokens) and `--calib sentences.txt --tokenizer <the model's folder>` (the same 60 sentences, "
            "one per line); the CLI checks each against fp32 on those inputs and keeps layers fp32 below mean "
            "cosine 0.99.",
            f"Quality: 60 sentences written for ptsq (12 topics x 5, examples/reference/minilm.py), each embedded "
            f"alone; latency: TorchScript artifacts as loaded (fp32: traced and frozen; 'fp32 eager': the model "
            f"as loaded), {THREADS} thread, 128 tokens, median of {RUNS} interleaved runs.",
            "; ".join(f"{k}: {v['layers']['int8']} int8 / {v['layers']['fp32']} fp32 Linear layers, artifact "
                      f"{v['int8_bytes'] / 1e6:.1f} MB, CLI run {v['seconds']:.0f} s" for k, v in runs.items())
            + (f"; kept fp32: {', '.join(r['name'] for r in fb)}" if fb else ""),
            "'same nearest neighbour': share of sentences whose nearest other sentence is unchanged "
            "(within-topic near-ties flip); 'NN in same topic': share whose nearest sentence is from its own topic.",
        ],
        extra={"quality": quality, "latency_ms": {f"{k[0]}|b{k[1]}": v for k, v in lat.items()},
               "cli": {k: {"check": v["check"], "check_samples": v["calibration"].get("check_samples")}
                       for k, v in runs.items()}},
    )  # fmt: skip


class tempfile_dir:
    def __enter__(self) -> str:
        import tempfile

        self._d = tempfile.TemporaryDirectory()
        return self._d.name

    def __exit__(self, *exc: Any) -> None:
        self._d.cleanup()


# -------------------------------------------------------------------------------------------------- LSTM
class LstmClassifier(nn.Module):
    def __init__(self, features: int = 64, hidden: int = 256, classes: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])


def bench_lstm() -> None:
    import ptsq

    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    fp32 = LstmClassifier().eval()
    example = (torch.randn(1, 100, 64),)
    checks = [(torch.randn(8, 100, 64),) for _ in range(4)]
    qm = ptsq.quantize_dynamic(fp32, example_inputs=example, check_inputs=checks)
    with tempfile_dir() as d:
        loaded = ptsq.load(qm.save(os.path.join(d, "lstm.pt")))
        lat = _latency(
            {"fp32": _trace(fp32, example), "int8": loaded.module}, lambda bs: (torch.randn(bs, 100, 64),), (1, 8)
        )
    c = qm.fidelity
    rows = [[
        "2-layer LSTM(64→256) + Linear, 100 steps", round(lat[("fp32", 1)], 2), round(lat[("int8", 1)], 2),
        round(lat[("fp32", 1)] / lat[("int8", 1)], 2), round(lat[("fp32", 8)], 2), round(lat[("int8", 8)], 2),
        round(lat[("fp32", 8)] / lat[("int8", 8)], 2), f"{c['cosine_mean']:.4f}",
    ]]  # fmt: skip
    write_section(
        "modes_lstm",
        title="Dynamic int8: LSTM sequence classifier (random weights, speed only)",
        columns=["model", "fp32 ms b1", "int8 ms b1", "speed-up b1", "fp32 ms b8", "int8 ms b8", "speed-up b8",
                 "output cosine"],
        rows=rows,
        command="python -m benchmarks.bench_modes lstm",
        order=61,
        notes=[f"{THREADS} thread, median of {RUNS} interleaved runs, TorchScript artifacts; random weights: "
               "the cosine says the kernels are right, not that a trained model keeps its accuracy."],
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------- QAT
def _w4a8(qat: bool) -> Any:
    from torch.ao.quantization import QConfig, get_default_qat_qconfig_mapping, get_default_qconfig_mapping
    from torch.ao.quantization.fake_quantize import FakeQuantize
    from torch.ao.quantization.observer import (
        HistogramObserver,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        PerChannelMinMaxObserver,
    )

    wargs = {"dtype": torch.qint8, "qscheme": torch.per_channel_symmetric, "quant_min": -8, "quant_max": 7}
    if qat:  # the same grids as PTQ below: 4-bit weights, full 8-bit activations (not default_fake_quant's 7)
        weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, ch_axis=0, **wargs)
        act = FakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver, dtype=torch.quint8, quant_min=0, quant_max=255, reduce_range=False
        )
        return get_default_qat_qconfig_mapping("x86").set_global(QConfig(activation=act, weight=weight))
    act = HistogramObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=255, reduce_range=False)
    weight = PerChannelMinMaxObserver.with_args(**wargs)
    return get_default_qconfig_mapping("x86").set_global(QConfig(activation=act, weight=weight))


def bench_qat() -> None:
    import numpy as np
    from examples.reference.fashion import (
        fashion_accuracy,
        fashion_net,
        fashion_train,
        fashion_train_subset,
        preprocess,
    )
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    import ptsq
    import ptsq.qat
    from ptsq.config import QatOptions, QuantConfig
    from ptsq.modes.qat import finetune

    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ.get("PTSQ_QAT_THREADS", "1")))
    steps, batch, lr = int(os.environ.get("PTSQ_QAT_STEPS", "300")), 64, 1e-3
    fp32 = fashion_net()
    calib = preprocess(fashion_train_subset(512, seed=1)[0])
    acc_fp32 = fashion_accuracy(fp32)
    # PTQ, 8-bit (ptsq default) and 4-bit weights
    qm8 = ptsq.quantize(fp32, [calib[i : i + 64] for i in range(0, 512, 64)], progress=False)
    acc_ptq8 = fashion_accuracy(qm8.module)
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(fp32), _w4a8(False), (calib[:1],))
        with torch.no_grad():
            for i in range(0, 512, 64):
                prepared(calib[i : i + 64])
        ptq4 = convert_fx(prepared)
    acc_ptq4 = fashion_accuracy(ptq4)
    # QAT, same 4-bit weight grid
    images, labels = fashion_train()
    rng = np.random.default_rng(0)
    index = rng.choice(len(images), size=steps * batch, replace=False)
    x_all, y_all = preprocess(images[index]), torch.from_numpy(labels[index])
    data = [(x_all[i : i + batch], y_all[i : i + batch]) for i in range(0, steps * batch, batch)]
    # lr = 0 check: calibrated, untrained fake quantization should score about what PTQ does
    untrained = ptsq.qat.prepare(fp32, (calib[:1],), config=QuantConfig(backend="x86"), qconfig_mapping=_w4a8(True))
    ptsq.qat.calibrate(untrained, data, max_batches=8)
    acc_fq0 = fashion_accuracy(untrained.eval())
    t0, c0 = time.perf_counter(), time.process_time()
    qat_model = ptsq.qat.prepare(fp32, (calib[:1],), config=QuantConfig(backend="x86"), qconfig_mapping=_w4a8(True))
    freeze_bn_at = float(os.environ.get("PTSQ_QAT_FREEZE_BN", "0.3"))
    hist = finetune(
        qat_model, data, QatOptions(epochs=1, lr=lr, freeze_bn_at=freeze_bn_at), progress=sys.stderr.isatty()
    )
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    acc_fq = fashion_accuracy(qat_model.eval())
    qm4 = ptsq.qat.convert(qat_model, check_inputs=[(calib[:64],)])
    acc_qat4 = fashion_accuracy(qm4.module)
    with tempfile_dir() as d:
        acc_reload = fashion_accuracy(ptsq.load(qm4.save(os.path.join(d, "qat.pt"))).module, n=2000)
    drop, left = acc_fp32 - acc_ptq4, acc_fp32 - acc_qat4
    recovered = (drop - left) / drop if drop > 0 else float("nan")
    pp = lambda a: round(100 * a, 2)  # noqa: E731
    rows = [
        ["fp32", pp(acc_fp32), 0.0, "-"],
        ["PTQ int8 (ptsq default, 512 calibration images)", pp(acc_ptq8), pp(acc_ptq8 - acc_fp32), "-"],
        ["PTQ 4-bit weights / 8-bit activations (harder setting)", pp(acc_ptq4), pp(acc_ptq4 - acc_fp32), "-"],
        [f"QAT 4-bit weights / 8-bit activations ({steps} steps x {batch}, {train_s:.0f} s)", pp(acc_qat4),
         pp(acc_qat4 - acc_fp32), f"{100 * recovered:.0f}% of the PTQ drop (target ≥ 50%)"],
    ]  # fmt: skip
    write_section(
        "modes_qat",
        title="Quantization-aware training: Fashion-MNIST ResNet, top-1 on the 10k test set",
        columns=["model", "top-1 %", "Δ vs fp32 (pp)", "recovered"],
        rows=rows,
        command="python -m benchmarks.bench_modes qat",
        order=62,
        notes=[
            "Default int8 PTQ loses nothing on this model, so the QAT experiment uses a deliberately harder setting: "
            "4-bit per-channel symmetric weights ([-8, 7] inside int8 kernels), 8-bit activations, for both PTQ "
            "(histogram observers, 512 calibration images) and QAT.",
            f"QAT: ptsq.qat.prepare(qconfig_mapping=4-bit) + ptsq.modes.qat.finetune: ranges calibrated on "
            f"{hist['calibration_batches']} training batches in eval mode first, then SGD momentum 0.9, lr {lr} with "
            f"cosine decay, {steps} steps of {batch} training images ({torch.get_num_threads()} threads, wall "
            f"{train_s:.0f} s, CPU {train_cpu:.0f} s on a shared machine); BN statistics frozen at "
            f"{100 * freeze_bn_at:.0f}% of steps, observers at 60%.",
            f"Checks: calibrated fake-quantized model before training (lr = 0) {pp(acc_fq0)}% (PTQ {pp(acc_ptq4)}%); "
            f"after training, fake-quantized {pp(acc_fq)}% vs converted int8 {pp(acc_qat4)}%.",
            f"The QAT artifact reloaded in the same process scores {pp(acc_reload)}% on the first 2,000 test images.",
        ],
        extra={"history": hist},
    )


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parts = sys.argv[1:] or ["minilm", "lstm", "qat"]
    for part in parts:
        {"minilm": bench_minilm, "lstm": bench_lstm, "qat": bench_qat}[part]()
