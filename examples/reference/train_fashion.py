"""Train FashionResNet on the complete Fashion-MNIST on the CPU and write its weights and metrics.

Run from the repository root. On 2 otherwise idle cores an epoch takes about a minute (5 epochs, about
5 minutes); the recorded run (weights/fashion_resnet.json, train_seconds) shared its 2 cores with other
jobs and took 805 s. The weights are committed, so nothing needs to retrain them.

    python -m examples.reference.train_fashion            # writes examples/reference/weights/fashion_resnet.{pt,json}
    python -m examples.reference.train_fashion --epochs 1 --out /tmp/quick.pt

Recipe: SGD (Nesterov, momentum 0.9, weight decay 5e-4) with a one-cycle learning-rate schedule, batch 256,
random horizontal flips and +-2 pixel shifts; channels-last memory format for CPU speed. The fp32 top-1 on
all 10,000 test images is measured once, after the last epoch (no model selection on the test set).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from examples.reference.fashion import (
    MEAN,
    STD,
    WEIGHTS,
    FashionResNet,
    fashion_accuracy,
    fashion_train,
    preprocess,
)


def augment(x: torch.Tensor, rng: np.random.Generator, shift: int = 2) -> torch.Tensor:
    """Per-image random horizontal flip and translation by up to ``shift`` pixels (padded with black)."""
    n, _, h, w = x.shape
    flip = torch.from_numpy(rng.random(n) < 0.5)
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if shift:
        padded = nn.functional.pad(x, (shift, shift, shift, shift), value=-MEAN / STD)  # a black pixel
        dy = torch.from_numpy(rng.integers(0, 2 * shift + 1, n))
        dx = torch.from_numpy(rng.integers(0, 2 * shift + 1, n))
        rows = (torch.arange(h)[None, :] + dy[:, None])[:, None, :, None]
        cols = (torch.arange(w)[None, :] + dx[:, None])[:, None, None, :]
        x = padded[torch.arange(n)[:, None, None, None], torch.zeros(1, 1, 1, 1, dtype=torch.long), rows, cols]
    return x


def train(epochs: int, seed: int, batch_size: int, max_lr: float, log: bool = True) -> tuple[FashionResNet, float]:
    """Train from scratch; returns the model (eval mode, contiguous format) and the wall-clock seconds."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, labels = fashion_train()
    x_all = preprocess(images)
    y_all = torch.from_numpy(labels.copy())
    model = FashionResNet().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=max_lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = len(x_all) // batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, epochs=epochs, steps_per_epoch=steps_per_epoch, pct_start=0.25
    )
    loss_fn = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(x_all)))
        total, seen = 0.0, 0
        for step in range(steps_per_epoch):
            index = order[step * batch_size : (step + 1) * batch_size]
            x = augment(x_all[index], rng).contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(x), y_all[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(index)
            seen += len(index)
        if log:
            elapsed = time.perf_counter() - start
            print(f"epoch {epoch + 1}/{epochs}  train loss {total / seen:.4f}  {elapsed:.0f} s", flush=True)
    seconds = time.perf_counter() - start
    model = model.to(memory_format=torch.contiguous_format).eval()
    return model, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-lr", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--out", type=Path, default=WEIGHTS, help=f"weights file (default {WEIGHTS})")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    model, seconds = train(args.epochs, args.seed, args.batch_size, args.max_lr)
    top1 = fashion_accuracy(model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(state, args.out)
    metrics = {
        "model": "FashionResNet",
        "widths": list(model.widths),
        "params": sum(p.numel() for p in model.parameters()),
        "fp32_test_top1": top1,
        "test_images": 10000,
        "fp32_test_top1_first2000": fashion_accuracy(model, n=2000),
        "epochs": args.epochs,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "max_lr": args.max_lr,
        "threads": args.threads,
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    args.out.with_suffix(".json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"fp32 test top-1 {top1:.4f}; trained in {seconds:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
