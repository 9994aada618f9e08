"""Evaluate fp32 models and int8 artifacts on one folder of images, side by side.

Labelled data gives top-1 and top-5 per model. Labels come from class sub-folders (the ImageFolder
layout: sorted folder names are class indices 0..N-1, or a class map, or folder names that are the
integer indices themselves) or from file names (a regular expression with one capture group holding
the integer class index). With two models or more, every candidate is also compared with the first
(the fp32 reference): top-1 agreement, top-5 overlap, mean KL(first || candidate) of the softmax,
SQNR (dB) and cosine of the outputs. Images are decoded in batches; one batch is in memory at a time
(the fidelity meter keeps the outputs, N x classes floats, not the images).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptsq.data.images import find_images
from ptsq.data.preprocess import Preprocess
from ptsq.errors import ConfigError, DataError, ImageDecodeError, InputShapeError, first_line
from ptsq.fidelity import FidelityMeter, flatten_outputs
from ptsq.progress import task

LABEL_MODES = ("auto", "folders", "pattern", "none")


# ------------------------------------------------------------------------------------------ labels
@dataclass
class Labelled:
    """Image paths with their integer labels (None when unlabelled), and how the labels were found."""

    paths: list[Path]
    labels: list[int] | None
    mode: str  # folders | pattern | none
    classes: list[str] | None = None  # folder names in index order (folders mode)
    ignored: list[Path] = field(default_factory=list)  # files the pattern did not match

    @property
    def max_label(self) -> int | None:
        return max(self.labels) if self.labels else None


def read_class_map(path: str | Path) -> dict[str, int]:
    """A class map file: JSON ``{"name": index}``, a JSON list of names, or one name per line (line = index)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read class map '{p}': {exc.strerror or exc}", "check the --class-map path") from None
    except UnicodeDecodeError:
        raise DataError(f"class map '{p}' is not UTF-8 text", "save it as UTF-8 JSON or one name per line") from None
    stripped = text.strip()
    try:
        data: Any = json.loads(stripped) if stripped[:1] in "[{" else None
    except json.JSONDecodeError as exc:
        raise DataError(f"class map '{p}' is not valid JSON ({exc.msg})", "fix the file") from None
    if data is None:
        data = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if isinstance(data, list):
        data = {str(name): i for i, name in enumerate(data)}
    if not isinstance(data, dict) or not data:
        raise DataError(f"class map '{p}' holds no classes", 'give {"folder": index, ...} or one name per line')
    out: dict[str, int] = {}
    for k, v in data.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise DataError(f"class map '{p}': class {k!r} has index {v!r}, not an integer >= 0", "fix the file")
        out[str(k)] = v
    return out


def _subset(paths: list[Path], root: Path, n: int) -> list[Path]:
    """A reproducible spread-out subset (by a hash of each relative path), in the original order."""

    def key(p: Path) -> bytes:
        return hashlib.blake2b(p.relative_to(root).as_posix().encode(), digest_size=8).digest()

    keep = set(sorted(paths, key=key)[:n])
    return [p for p in paths if p in keep]


def _below(root: Path, path: Path) -> tuple[str, ...]:
    """``path.relative_to(root).parts`` for a path found under ``root`` (it starts with root's parts), without
    building a new Path: on 10,000 files that was most of the listing's CPU, which the driver spends alone."""
    return path.parts[len(root.parts) :]


def find_labelled(
    data: str | Path,
    *,
    labels: str = "auto",
    label_pattern: str | None = None,
    class_map: dict[str, int] | str | Path | None = None,
    labels_from_index: bool = False,
    max_images: int | None = None,
) -> Labelled:
    """Find the images under ``data`` and their labels (see the module docstring for the layouts).

    ``labels="auto"`` uses the pattern if given, else class folders when every image sits in one of
    two or more sub-folders, else no labels. ``max_images`` keeps a reproducible subset.
    """
    if labels not in LABEL_MODES:
        raise ConfigError(f"labels mode {labels!r} is unknown", f"use one of: {', '.join(LABEL_MODES)}")
    if max_images is not None and max_images < 1:
        raise ConfigError(f"max_images {max_images!r} must be at least 1", "e.g. --max-images 1000")
    root = Path(data).expanduser()
    paths = find_images(root, what="evaluation folder")
    folder_opts = class_map is not None or labels_from_index
    if labels == "auto":
        if label_pattern:
            labels = "pattern"
        elif folder_opts:
            labels = "folders"
        else:
            rel = [_below(root, p) for p in paths]
            tops = {r[0] for r in rel if len(r) >= 2}
            in_folders = all(len(r) >= 2 for r in rel)
            labels = "folders" if in_folders and len(tops) >= 2 else "none"
    if labels == "pattern" and not label_pattern:
        raise ConfigError("labels from file names need a pattern", r"pass e.g. --label-pattern 'img_\d+_(\d+)\.jpg'")
    if labels != "pattern" and label_pattern:
        raise ConfigError(f"--label-pattern cannot be used with --labels {labels}", "drop one of them")
    if labels != "folders" and folder_opts:
        raise ConfigError(f"--class-map/--labels-from-index need class folders, not --labels {labels}", "drop one")

    if labels == "none":
        if max_images is not None and len(paths) > max_images:
            paths = _subset(paths, root, max_images)
        return Labelled(paths, None, "none")
    if labels == "pattern":
        out = _by_pattern(root, paths, str(label_pattern))
    else:
        cmap = read_class_map(class_map) if isinstance(class_map, (str, Path)) else class_map
        out = _by_folder(root, paths, cmap, labels_from_index)
    if max_images is not None and len(out.paths) > max_images:
        keep = set(_subset(out.paths, root, max_images))
        pairs = [(p, y) for p, y in zip(out.paths, out.labels or []) if p in keep]
        out.paths, out.labels = [p for p, _ in pairs], [y for _, y in pairs]
    return out


def _by_pattern(root: Path, paths: list[Path], pattern: str) -> Labelled:
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"--label-pattern {pattern!r} is not a valid regular expression ({exc})", "fix it") from None
    if rx.groups != 1:
        raise ConfigError(
            f"--label-pattern {pattern!r} has {rx.groups} capture groups; it needs exactly one (the class index)",
            r"e.g. 'imagenet_\d+_(\d+)\.jpg' (use (?:...) for other groups)",
        )
    kept, labels, ignored = [], [], []
    for p in paths:
        m = rx.search(p.name)
        if m is None:
            ignored.append(p)
            continue
        try:
            labels.append(int(m.group(1)))
        except (TypeError, ValueError):
            raise DataError(
                f"labels cannot be determined: --label-pattern captures {m.group(1)!r} from '{p.name}', not an integer",
                "the capture group must hold the integer class index",
            ) from None
        kept.append(p)
    if not kept:
        raise DataError(
            f"labels cannot be determined: no file name in '{root}' matches --label-pattern {pattern!r} "
            f"(e.g. '{paths[0].name}')",
            "fix the pattern (it is searched in each file name) or use class sub-folders",
        )
    return Labelled(kept, labels, "pattern", ignored=ignored)


def _by_folder(root: Path, paths: list[Path], cmap: dict[str, int] | None, from_index: bool) -> Labelled:
    rel = [_below(root, p) for p in paths]
    loose = [p for p, r in zip(paths, rel) if len(r) < 2]
    if loose:
        raise DataError(
            f"labels cannot be determined: {len(loose)} image(s) sit directly in '{root}' "
            f"(e.g. '{loose[0].name}'), not in class sub-folders",
            "put each image in a folder named after its class, use --label-pattern, or --labels none",
        )
    names = sorted({r[0] for r in rel})
    if cmap is not None:
        missing = [n for n in names if n not in cmap]
        if missing:
            raise DataError(
                f"labels cannot be determined: class folder(s) {', '.join(repr(m) for m in missing[:3])} "
                "are not in the class map",
                "add them to the --class-map file",
            )
        index = {n: cmap[n] for n in names}
    elif from_index:
        bad = [n for n in names if not n.isdigit()]
        if bad:
            raise DataError(
                f"labels cannot be determined: folder {bad[0]!r} is not an integer class index",
                "drop --labels-from-index to number sorted folder names 0..N-1, or give --class-map",
            )
        index = {n: int(n) for n in names}
    else:
        if len(names) < 2:
            raise DataError(
                f"labels cannot be determined: '{root}' has only one class folder ({names[0]!r})",
                "give a folder with one sub-folder per class, or --labels none to compare models only",
            )
        index = {n: i for i, n in enumerate(names)}
    labels = [index[r[0]] for r in rel]
    classes = names if cmap is None and not from_index else None
    return Labelled(paths, labels, "folders", classes=classes)


# ------------------------------------------------------------------------------------------ models
def _input_hw(model: nn.Module) -> tuple[int, int] | None:
    manifest = getattr(model, "manifest", None)
    if not isinstance(manifest, dict):
        return None
    shapes = manifest.get("input", {}).get("shapes") or []
    return (int(shapes[0][-2]), int(shapes[0][-1])) if shapes and len(shapes[0]) >= 3 else None


def preprocess_from_artifacts(models: Sequence[nn.Module], names: Sequence[str] | None = None) -> Preprocess | None:
    """The preprocessing stored in the first artifact among ``models`` (None if there is none).

    Raises ConfigError if the artifacts were quantized for different input sizes.
    """
    names = list(names) if names is not None else [f"model {i}" for i in range(len(models))]
    sized = [(n, hw) for n, m in zip(names, models) if (hw := _input_hw(m)) is not None]
    for n, hw in sized[1:]:
        if hw != sized[0][1]:
            raise ConfigError(
                f"artifacts were quantized for different input sizes: '{sized[0][0]}' "
                f"{sized[0][1][0]}x{sized[0][1][1]}, '{n}' {hw[0]}x{hw[1]}",
                "compare artifacts quantized from the same model and input size",
            )
    for m in models:
        pre = getattr(m, "manifest", {}).get("preprocess") if isinstance(getattr(m, "manifest", None), dict) else None
        if pre:
            return Preprocess.from_dict(pre)
    return None


# ------------------------------------------------------------------------------------------ result
@dataclass
class ModelScore:
    label: str
    kind: str
    top1: float | None = None
    top5: float | None = None
    fidelity: dict[str, Any] | None = None  # vs the first model; None for the first


@dataclass
class EvalResult:
    source: str
    images: int
    skipped: list[tuple[str, str]]
    labels: str
    classes: int | None
    preprocess: dict[str, Any]
    models: list[ModelScore]
    ignored: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": {
                "source": self.source, "images": self.images, "skipped": len(self.skipped),
                "skipped_files": [{"path": p, "reason": r} for p, r in self.skipped[:20]],
                "labels": self.labels, "classes": self.classes, "ignored_unmatched": self.ignored,
            },
            "preprocess": self.preprocess,
            "models": [vars(m) for m in self.models],
        }  # fmt: skip


def _scores(out: Any, label: str) -> torch.Tensor:
    ts = flatten_outputs(out)
    if len(ts) != 1 or ts[0].dim() != 2:
        shapes = [tuple(t.shape) for t in ts]
        raise InputShapeError(
            f"'{label}' outputs {shapes}, not one (batch, classes) tensor of class scores",
            "labelled evaluation needs a classifier; use --labels none to compare outputs only",
        )
    return ts[0].float()


class Tally:
    """Top-1/top-5 of each model and its fidelity to the first, accumulated batch by batch in data order.

    Every path that evaluates (one process, or outputs gathered from workers) feeds the same ``add``, so
    the figures are computed by one piece of code whatever ran the models.
    """

    def __init__(self, names: Sequence[str], found: Labelled) -> None:
        self.names = list(names)
        self.found = found
        self.meters = [FidelityMeter() for _ in self.names[1:]]
        self.top1 = [0] * len(self.names)
        self.top5 = [0] * len(self.names)
        self.counted = 0
        self.classes: int | None = None

    def add(self, outs: Sequence[Any], y: torch.Tensor | None, n: int) -> None:
        """One batch of ``n`` samples: each model's output, and the labels (None when unlabelled)."""
        if y is not None:
            for j, (name, out) in enumerate(zip(self.names, outs)):
                s = _scores(out, name)
                if self.classes is None:
                    self.classes = int(s.shape[1])
                    _check_classes(self.found, self.classes, name)
                topk = s.topk(min(5, s.shape[1]), dim=1).indices
                self.top1[j] += int((topk[:, 0] == y).sum())
                self.top5[j] += int((topk == y[:, None]).any(1).sum())
        for meter, name, out in zip(self.meters, self.names[1:], outs[1:]):
            try:
                meter.update(outs[0], out)
            except ValueError:
                raise ConfigError(
                    f"'{name}' outputs differ in shape from '{self.names[0]}'s", "compare versions of the same model"
                ) from None
        self.counted += n

    def scores(self, kinds: Sequence[str], labelled: bool) -> list[ModelScore]:
        out = []
        for j, (name, kind) in enumerate(zip(self.names, kinds)):
            sc = ModelScore(name, kind)
            if labelled:
                sc.top1, sc.top5 = round(self.top1[j] / self.counted, 6), round(self.top5[j] / self.counted, 6)
            if j:
                sc.fidelity = self.meters[j - 1].result().to_dict()
            out.append(sc)
        return out


def image_batches(
    found: Labelled, pre: Preprocess, batch_size: int, skipped: list[tuple[str, str]], update: Any = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Decoded ``(images, labels)`` batches in file order; unreadable files go to ``skipped``."""
    paths, ys = found.paths, found.labels
    for start in range(0, len(paths), batch_size):
        chunk = range(start, min(start + batch_size, len(paths)))
        xs, yb = [], []
        for i in chunk:
            try:
                xs.append(_decode(paths[i], pre))
            except ImageDecodeError as exc:
                skipped.append((str(paths[i]), exc.reason))
                continue
            if ys is not None:
                yb.append(ys[i])
        if update is not None:
            update(chunk.stop)
        if xs:
            yield torch.stack(xs), (torch.tensor(yb) if ys is not None else None)


def run_models(models: Sequence[nn.Module], names: Sequence[str], x: torch.Tensor) -> list[Any]:
    """Every model's output on ``x``; a model that rejects the input is the user's preprocessing, said once."""
    outs = []
    for name, m in zip(names, models):
        try:
            outs.append(m(x))
        except Exception as exc:
            raise InputShapeError(
                f"'{name}' rejects inputs of shape {tuple(x.shape)}: {first_line(exc)}",
                "pass the preprocessing the model expects (--input-size, --preset, --channels)",
            ) from None
    return outs


ITEM_IMAGES = 256  # images per Ray work item (whole batches): amortises the per-call cost of a Ray actor


def evaluate(
    models: Sequence[nn.Module],
    data: str | Path,
    *,
    preprocess: Preprocess | None = None,
    names: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    labels: str = "auto",
    label_pattern: str | None = None,
    class_map: dict[str, int] | str | Path | None = None,
    labels_from_index: bool = False,
    batch_size: int = 32,
    max_images: int | None = None,
    progress: bool = False,
    ray: Any = None,
    workers: int | None = None,
    threads: int = 1,
) -> EvalResult:
    """Top-1/top-5 of each model on labelled images, and fidelity of each candidate vs the first.

    ``models``: the first is the reference (usually fp32); the others are compared with it.
    ``preprocess``: default is the one stored in the first artifact among ``models`` (see
    :func:`preprocess_from_artifacts`), else ImageNet's. Without labels, at least two models are needed.
    ``ray``: ``"auto"`` (a local Ray instance), a cluster address, or a :class:`ptsq.distributed.cluster.Cluster`:
    the batches are read, preprocessed and run on Ray workers (``workers`` at once, ``threads`` torch threads
    each) and their outputs folded in here, in order, by the same code: the figures equal the single-process ones.
    """
    if not models:
        raise ConfigError("nothing to evaluate", "give at least one model or artifact")
    if batch_size < 1:
        raise ConfigError(f"batch_size {batch_size!r} must be at least 1", "e.g. --batch-size 32")
    names = list(names) if names is not None else [f"model {i}" for i in range(len(models))]
    kinds = list(kinds) if kinds is not None else ["int8" if hasattr(m, "manifest") else "fp32" for m in models]
    pre = preprocess or preprocess_from_artifacts(models, names) or Preprocess()
    found = find_labelled(
        data, labels=labels, label_pattern=label_pattern, class_map=class_map,
        labels_from_index=labels_from_index, max_images=max_images,
    )  # fmt: skip
    if found.labels is None and len(models) < 2:
        raise DataError(
            f"labels cannot be determined for '{data}' (no class sub-folders, no --label-pattern), "
            "and there is no second model to compare with",
            "use class sub-folders or --label-pattern, or give an int8 artifact to compare with the fp32 model",
        )
    for m in models:
        m.eval()
    tally = Tally(names, found)
    skipped: list[tuple[str, str]] = []
    from ptsq.distributed.cluster import using

    with using(ray, workers) as cluster, task("evaluating", len(found.paths), progress) as update:
        if cluster is None:
            with torch.inference_mode():
                for x, y in image_batches(found, pre, batch_size, skipped, update):
                    tally.add(run_models(models, names, x), y, len(x))
        else:
            _evaluate_on(cluster, tally, skipped, update, models, names, found, pre, batch_size, threads)
    if tally.counted == 0:
        raise DataError(
            f"none of the {len(found.paths)} images in '{data}' could be read; first problem: {skipped[0][1]}",
            "check the files are complete, real images",
        )
    labelled = found.labels is not None
    return EvalResult(
        source=str(data), images=tally.counted, skipped=skipped, labels=found.mode,
        classes=tally.classes if labelled else None, preprocess=pre.to_dict(),
        models=tally.scores(kinds, labelled), ignored=len(found.ignored),
    )  # fmt: skip


def run_chunks(ctx: tuple[Sequence[nn.Module], Sequence[str], Preprocess], chunks: Sequence[Sequence[str]]) -> list:
    """Batches on a worker: for each, decode its paths and run every model on them.

    Returns one (decoded positions, skipped files, outputs) per batch; each batch is the one a single
    process would form, so the outputs are the same numbers.
    """
    models, names, pre = ctx
    out = []
    for paths in chunks:
        xs, ok, skipped = [], [], []
        for k, p in enumerate(paths):
            try:
                xs.append(_decode(Path(p), pre))
            except ImageDecodeError as exc:
                skipped.append((p, exc.reason))
                continue
            ok.append(k)
        if not xs:
            out.append((ok, skipped, []))
            continue
        with torch.inference_mode():
            out.append((ok, skipped, [plain(o) for o in run_models(models, names, torch.stack(xs))]))
    return out


def plain(out: Any) -> Any:
    """An output ready to travel: quantized tensors dequantized (what the figures use anyway), views copied."""
    if isinstance(out, torch.Tensor):
        return out.dequantize() if out.is_quantized else out.clone()
    if isinstance(out, dict):
        return {k: plain(v) for k, v in out.items()}
    if isinstance(out, tuple) and hasattr(out, "_fields"):  # a named tuple
        return type(out)(*map(plain, out))
    if isinstance(out, (list, tuple)):
        return type(out)(plain(v) for v in out)
    return out


def _evaluate_on(
    cluster: Any,
    tally: Tally,
    skipped: list[tuple[str, str]],
    update: Any,
    models: Sequence[nn.Module],
    names: Sequence[str],
    found: Labelled,
    pre: Preprocess,
    batch_size: int,
    threads: int,
) -> None:
    """The same batches as :func:`image_batches`, run by Ray actors that hold the models; folded in order.

    Several consecutive batches travel as one work item (at least ``ITEM_IMAGES`` images), so that Ray's
    per-call cost stays small next to the work, whatever the batch size.
    """
    from ptsq.distributed.actors import ordered_map

    paths = [str(p) for p in found.paths]
    starts = range(0, len(paths), batch_size)
    chunks = [paths[s : s + batch_size] for s in starts]
    # but at least 4 items per worker, so that the work still spreads (and a slow worker is caught up on)
    per_item = max(1, min(-(-ITEM_IMAGES // batch_size), len(chunks) // (4 * cluster.slots(threads))))
    items = [chunks[i : i + per_item] for i in range(0, len(chunks), per_item)]
    results = ordered_map(run_chunks, (list(models), list(names), pre), items, cluster, threads=threads, what="models")
    flat = (batch for item in results for batch in item)
    for (ok, bad, outs), start, chunk in zip(flat, starts, chunks):  # flat first: it runs to its end
        skipped += bad
        update(start + len(chunk))
        if ok:
            ys = found.labels
            y = torch.tensor([ys[start + k] for k in ok]) if ys is not None else None
            with torch.inference_mode():
                tally.add(outs, y, len(ok))


def _decode(path: Path, pre: Preprocess) -> torch.Tensor:
    from ptsq.data.images import decode_image

    return decode_image(path, pre)


def _check_classes(found: Labelled, n_outputs: int, name: str) -> None:
    if found.mode == "folders" and found.classes is not None and len(found.classes) != n_outputs:
        raise DataError(
            f"the data has {len(found.classes)} class folders but '{name}' has {n_outputs} outputs",
            "give one folder per model class, a --class-map, or --labels-from-index for integer folder names",
        )
    top = found.max_label
    if top is not None and top >= n_outputs:
        raise DataError(
            f"labels go up to {top} but '{name}' has only {n_outputs} outputs (class count does not match)",
            "check the labels (--label-pattern / --class-map) belong to this model's classes",
        )


__all__ = [
    "EvalResult", "Labelled", "ModelScore", "Tally", "evaluate", "find_labelled", "image_batches",
    "plain", "preprocess_from_artifacts", "run_chunks", "run_models",
]  # fmt: skip
