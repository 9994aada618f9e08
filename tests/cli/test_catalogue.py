"""The catalogue of bad inputs and faults, across commands (issue 6).

Every error case asserts: exit code 2, one ``error:`` line naming the problem, no traceback, no
output file and no temporary leftovers in the output folder, and the input tree unchanged
(digest before == after). A few cases must *succeed* (mixed good/bad images, mixed sizes and
modes) and assert the warning instead. docs/reliability.md lists the same cases.

Interruption mid-calibration (SIGINT/SIGTERM on a real process) lives in test_quantize_cli.py.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.cli.conftest import Result, run_cli, spec
from tests.conftest import write_photos
from tests.models import FaceNet, SmallNet, randomize_bn

QFAST = ["--preset", "imagenet", "--input-size", "32", "--num-calib", "8", "--batch-size", "4", "--speed-guard", "0",
         "--no-speed-check"]  # fmt: skip


# --------------------------------------------------------------------------- file makers


class Payload:
    """Unpickling this creates ``marker``: proof that a loader executed pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (self.marker, "w"))


def _malicious(path: Path, marker: Path, wrap: Callable[[object], object] = lambda x: x) -> Path:
    torch.save(wrap(Payload(marker)), path)
    return path


def _bomb_png(path: Path, w: int = 60000, h: int = 60000) -> Path:
    """A tiny PNG whose header claims w x h pixels (a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    struct.pack_into(">II", data, 16, w, h)  # IHDR width/height
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def _truncated_jpeg(path: Path) -> Path:
    write_photos(path.parent / "_src", 1, size=(64, 64))
    data = (path.parent / "_src" / "img_000.jpg").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    (path.parent / "_src" / "img_000.jpg").unlink()
    (path.parent / "_src").rmdir()
    return path


def _mixed_modes(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "rgb.jpg")
    Image.fromarray(rgb[:, :, 0]).save(folder / "gray.png")
    Image.fromarray(rgb).convert("RGBA").resize((31, 90)).save(folder / "rgba.png")
    Image.fromarray(rgb).convert("P").resize((200, 20)).save(folder / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rgb).convert("1").save(folder / "bw.bmp")
    Image.fromarray((rng.integers(0, 65535, (40, 40))).astype(np.uint16)).save(folder / "deep16.png")
    Image.fromarray(rgb).convert("LA").save(folder / "la.png")
    Image.fromarray(rgb).save(folder / "tiny.webp")
    return folder


def _artifact(tmp: Path, weights: Path, photos: Path) -> Path:
    out = tmp / "_art" / "a.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    res = run_cli("quantize", spec("SmallNet"), "--weights", weights, "--calib", photos, "-o", out, *QFAST, "-q")
    assert res.code == 0, res.stderr
    return out


def _rewrite_manifest(src: Path, dst: Path, edit: Callable[[dict], str]) -> Path:
    """Copy a zip artifact replacing its embedded manifest with ``edit(manifest_dict)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("ptsq_manifest.json"):
                data = edit(json.loads(data)).encode()
            zout.writestr(info, data)
    return dst


def _tampered(m: dict) -> str:
    from ptsq.artifact import seal

    sealed = json.loads(seal(m))
    sealed["check"]["sqnr_db"] = 99.0  # a nicer figure, checksum left as it was
    return json.dumps(sealed)


def _newer(m: dict) -> str:
    from ptsq.artifact import FORMAT_VERSION, seal

    return seal({**m, "format_version": FORMAT_VERSION + 1})


def tree_digest(root: Path) -> str:
    """Names and bytes of every file under root; a symlink counts by its target (it may be unreadable)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_symlink():
            h.update(os.readlink(p).encode())
        elif p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def _io_error_image(path: Path) -> None:
    """An image file whose read fails with EIO, as a bad sector or a dropped network mount would."""
    path.symlink_to("/proc/self/mem")  # reading offset 0 of a process's memory fails, even for root


def assert_clean_error(res: Result, *needles: str) -> None:
    """Exit 2, exactly one ``error:`` line naming the problem, then a ``hint:`` line; no traceback.

    Other stderr lines (progress notes for humans, warnings) are allowed.
    """
    assert res.code == 2, (res.code, res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [i for i, ln in enumerate(lines) if ln.startswith("error: ")]
    assert len(errors) == 1, res.stderr
    assert errors[0] + 1 < len(lines) and lines[errors[0] + 1].startswith("hint: "), res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    for n in needles:
        assert n.lower() in lines[errors[0]].lower(), (n, lines[errors[0]])


# --------------------------------------------------------------------------- the cases


@dataclass
class Ctx:
    """What a case builds on: an input folder (digested), an empty output folder, shared files."""

    inp: Path
    out: Path
    weights: Path
    photos: Path  # a folder of 6 good images inside inp
    marker: Path  # must never exist: created only if pickled code runs
    monkeypatch: pytest.MonkeyPatch
    artifact: Callable[[], Path]


@dataclass
class Case:
    name: str
    build: Callable[[Ctx], list[object]]  # CLI arguments
    needles: tuple[str, ...] = ()
    code: int = 2
    success: bool = False  # exit 0 and an output file
    warns: tuple[str, ...] = ()
    skip: Callable[[], str | None] = field(default=lambda: None)


def q(ctx: Ctx, calib: object, *extra: object, model: str = "SmallNet", weights: bool = True) -> list[object]:
    w = ["--weights", ctx.weights] if weights else []
    return ["quantize", spec(model), *w, "--calib", calib, "-o", ctx.out / "o.pt", *QFAST, *extra]


def bare(ctx: Ctx, *extra: object, model: str = "SmallNet") -> list[object]:
    """quantize without QFAST's preprocessing flags and speed options: the case gives what it needs."""
    return ["quantize", spec(model), "--weights", ctx.weights, "--calib", ctx.photos, "-o", ctx.out / "o.pt",
            "--num-calib", "8", "--batch-size", "4", "--speed-guard", "0", *extra]  # fmt: skip


def _picky(ctx: Ctx) -> list[object]:
    """A model whose forward refuses one thread: the speed check (--threads 1) cannot time it."""
    return ["quantize", spec("ThreadPicky"), "--calib", ctx.photos, "-o", ctx.out / "o.pt", "--num-calib", "8",
            "--batch-size", "4", "--speed-guard", "0", "--input-size", "32", "--mean", "0", "--std", "1",
            "--scale", "1"]  # fmt: skip


def _untimed() -> str | None:
    """Without torch.ao the default engine is PT2E; run uncompiled (PTSQ_PT2E_EAGER), nothing is timed."""
    from ptsq import legacy

    if not legacy.available() and os.environ.get("PTSQ_PT2E_EAGER", "") not in ("", "0"):
        return "PT2E runs uncompiled here, so the speed check times nothing"
    return None


def _cores_plus_one() -> str:
    from ptsq.machine import usable_cores

    return str(usable_cores() + 1)


def folder(ctx: Ctx, name: str, files: dict[str, bytes | Callable[[Path], object]], good: int = 0) -> Path:
    d = ctx.inp / name
    d.mkdir()
    if good:
        write_photos(d, good, size=(40, 48))
    for fname, content in files.items():
        if callable(content):
            content(d / fname)
        else:
            (d / fname).write_bytes(content)
    return d


def _tensor_file(ctx: Ctx, name: str, value: object) -> Path:
    p = ctx.inp / name
    if name.endswith(".npy"):
        np.save(p, value)
    else:
        torch.save(value, p)
    return p


def _with_nan() -> torch.Tensor:
    x = torch.randn(12, 3, 32, 32)
    x[7, 1, 3, 3] = float("nan")
    return x


def _with_inf() -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(12, 3, 32, 32)).astype(np.float32)
    x[5, 0, 0, 0] = np.inf
    return x


def _root_skip() -> str | None:
    return "running as root: permissions do not stop root from reading" if os.geteuid() == 0 else None


def _unreadable_folder(ctx: Ctx) -> list[object]:
    d = folder(ctx, "locked", {}, good=2)
    d.chmod(0)
    ctx.monkeypatch.setattr(Ctx, "_restore", lambda: d.chmod(0o755), raising=False)
    return q(ctx, d)


def _ro_output(ctx: Ctx, path: str) -> list[object]:
    return ["quantize", spec("SmallNet"), "--weights", ctx.weights, "--calib", ctx.photos, "-o", path, *QFAST]


def _full_disk(ctx: Ctx) -> list[object]:
    real = Path.write_bytes

    def half_then_enospc(self: Path, data: bytes) -> int:  # what a full disk looks like: a short write
        if self.suffix == ".pt":
            with open(self, "wb") as f:
                f.write(bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, data)

    ctx.monkeypatch.setattr(Path, "write_bytes", half_then_enospc)
    return q(ctx, ctx.photos)


def _interrupt_mid_write(ctx: Ctx) -> list[object]:
    from ptsq.engines import get_engine
    from ptsq.legacy import default_engine

    engine = type(get_engine(default_engine()))  # the engine `ptsq quantize` uses without --engine
    real = engine.save

    def save_then_interrupt(self, result, path, text, example_args):  # type: ignore[no-untyped-def]
        real(self, result, path, text, example_args)
        with open(path, "r+b") as f:  # the signal arrives with half the bytes on disk
            f.truncate(path.stat().st_size // 2)
        raise KeyboardInterrupt

    ctx.monkeypatch.setattr(engine, "save", save_then_interrupt)
    return q(ctx, ctx.photos)


def _can_mount() -> str | None:
    if os.geteuid() != 0 or not Path("/proc/mounts").exists():
        return "needs root to mount a small tmpfs"
    return None


@contextlib.contextmanager
def _tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if r.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)
        where.rmdir()


CASES = [
    # ---- calibration paths
    Case("calib-missing", lambda c: q(c, c.inp / "nope"), ("does not exist",)),
    Case("calib-empty-folder", lambda c: q(c, folder(c, "empty", {})), ("empty",)),
    Case("calib-no-images", lambda c: q(c, folder(c, "docs", {"a.txt": b"x", "b.csv": b"1"})), ("no image files",)),
    Case("calib-unreadable-folder", _unreadable_folder, ("cannot list",), skip=_root_skip),
    Case(
        "images-unreadable-io-error",
        lambda c: q(c, folder(c, "bad", {"x.jpg": _io_error_image})),
        ("could be read", "cannot read file"),
        skip=lambda: None if Path("/proc/self/mem").exists() else "needs Linux /proc/self/mem",
    ),
    Case("calib-file-unknown-kind", lambda c: q(c, folder(c, "f", {"x.csv": b"hi"}) / "x.csv"), ("unknown extension",)),
    Case(
        "calib-text-without-tokenizer",
        lambda c: q(c, folder(c, "t", {"x.txt": b"hi"}) / "x.txt"),
        ("needs a tokenizer",),
    ),
    # ---- broken images (a folder where all are bad fails; mixed with good ones is a warning)
    Case(
        "images-corrupt",
        lambda c: q(c, folder(c, "bad", {"a.jpg": b"\xff\xd8\xff" + b"\x00" * 300})),
        ("could be read",),
    ),
    Case("images-truncated", lambda c: q(c, folder(c, "bad", {"t.jpg": _truncated_jpeg})), ("truncated",)),
    Case("images-zero-byte", lambda c: q(c, folder(c, "bad", {"z.png": b""})), ("zero-byte",)),
    Case("images-bomb", lambda c: q(c, folder(c, "bad", {"huge.png": _bomb_png})), ("too large",)),
    Case(
        "images-wrong-extension",
        lambda c: q(c, folder(c, "bad", {"page.jpg": b"<!DOCTYPE html><html>404</html>"})),
        ("not an image", "HTML"),
    ),
    Case(
        "images-bad-mixed-with-good",
        lambda c: q(
            c,
            folder(c, "mixed", {"z.png": b"", "huge.png": _bomb_png, "t.jpg": _truncated_jpeg}, good=6),
            "--num-calib",
            "20",
        ),
        success=True,
        warns=("skipped 3 of", "z.png", "huge.png", "t.jpg"),
    ),
    Case("images-mixed-sizes-and-modes", lambda c: q(c, _mixed_modes(c.inp / "modes")), success=True),
    Case("max-images-guard", lambda c: q(c, c.photos, "--max-images", "3"), ("more than 3 images",)),
    # ---- tensor calibration files
    Case("tensor-nan", lambda c: q(c, _tensor_file(c, "nan.pt", _with_nan())), ("NaN", "index 7", "nan.pt")),
    Case("tensor-inf-npy", lambda c: q(c, _tensor_file(c, "inf.npy", _with_inf())), ("infinite", "index 5")),
    Case(
        "tensor-wrong-rank",
        lambda c: q(c, _tensor_file(c, "r2.pt", torch.randn(8, 96))),
        ("rejects inputs of shape (1, 96)",),
    ),
    Case(
        "tensor-model-rejects-shape",
        lambda c: q(c, _tensor_file(c, "gray.pt", torch.randn(8, 1, 32, 32))),
        ("rejects inputs of shape", "(1, 1, 32, 32)"),
    ),
    Case(
        "tensor-malicious-pickle", lambda c: q(c, _malicious(c.inp / "evil.pt", c.marker, lambda p: [p])), ("pickled",)
    ),
    Case(
        "tensor-truncated",
        lambda c: q(c, folder(c, "t", {"x.pt": b"PK\x03\x04" + b"\x00" * 40}) / "x.pt"),
        ("cannot be read",),
    ),
    # ---- models and weights
    Case(
        "weights-other-architecture",
        lambda c: [*q(c, c.photos, weights=False), "--weights", _face_weights(c)],
        ("do not match",),
    ),
    Case(
        "weights-malicious-pickle",
        lambda c: [
            *q(c, c.photos, weights=False),
            "--weights",
            _malicious(c.inp / "w.pth", c.marker, lambda p: {"fc.weight": p}),
        ],
        ("pickled",),
    ),
    Case(
        "weights-truncated",
        lambda c: [*q(c, c.photos, weights=False), "--weights", _cut(c.weights, c.inp / "cut.pth")],
        ("cannot read",),
    ),
    Case(
        "model-malicious-pickle",
        lambda c: ["quantize", _malicious(c.inp / "m.pt", c.marker), "--calib", c.photos, "-o", c.out / "o.pt"],
        ("pickled",),
    ),
    Case(
        "model-missing",
        lambda c: ["quantize", c.inp / "nope.pt", "--calib", c.photos, "-o", c.out / "o.pt"],
        ("neither an existing file",),
    ),
    # ---- options
    Case("bad-input-size", lambda c: q(c, c.photos, "--input-size", "abc"), ("not a number",)),
    Case("bad-mean", lambda c: q(c, c.photos, "--mean", "0.5,x,0.5"), ("not a list of numbers",)),
    Case("bad-skip-regex", lambda c: q(c, c.photos, "--skip", "regex:(conv"), ("invalid",)),
    Case("skip-matches-nothing", lambda c: q(c, c.photos, "--skip", "name:nothing.here"), ("nothing.here",)),
    Case("no-input-spec-no-flags", lambda c: bare(c), ("no input spec", "no preprocessing was given")),
    Case("preset-size-missing", lambda c: bare(c, "--preset", "minus1to1"), ("--input-size",)),
    Case(
        "preprocessing-conflict",
        lambda c: bare(c, "--preset", "imagenet", "--mean", "0.5", "--input-size", "32"),
        ("--preset imagenet and --mean",),
    ),
    Case("threads-zero", lambda c: q(c, c.photos, "--threads", "0"), ("--threads '0'", "at least 1")),
    Case("threads-above-cores", lambda c: q(c, c.photos, "--threads", _cores_plus_one()), ("core(s)",)),
    Case("check-samples-over-data", lambda c: q(c, c.photos, "--check-samples", "6"), ("--check-samples 6", "6 calib")),
    Case("model-rejects-timing-threads", lambda c: _picky(c), ("fails when timed at 1 thread",), skip=_untimed),
    # ---- output
    Case("output-folder-missing", lambda c: _ro_output(c, str(c.out / "no" / "o.pt")), ("does not exist",)),
    Case("output-exists-no-force", lambda c: _ro_output(c, str(_exists(c))), ("already exists",)),
    Case("output-on-proc", lambda c: _ro_output(c, f"/proc/ptsq-{uuid.uuid4().hex}.pt"), ("cannot write",)),
    Case("output-on-sys", lambda c: _ro_output(c, f"/sys/kernel/ptsq-{uuid.uuid4().hex}.pt"), ("cannot write",)),
    Case("output-disk-full", _full_disk, ("no space left",)),
    Case("interrupt-mid-write", _interrupt_mid_write, ("interrupted",)),
    # ---- artifacts: info and bench
    Case("info-missing", lambda c: ["info", c.inp / "nope.pt"], ("does not exist",)),
    Case("info-zero-byte", lambda c: ["info", folder(c, "a", {"z.pt": b""}) / "z.pt"], ("empty",)),
    Case("info-truncated", lambda c: ["info", _cut(c.artifact(), c.inp / "cut.pt")], ("not a ptsq artifact",)),
    Case(
        "info-tampered-manifest",
        lambda c: ["info", _rewrite_manifest(c.artifact(), c.inp / "t.pt", _tampered)],
        ("modified",),
    ),
    Case(
        "info-newer-format",
        lambda c: ["info", _rewrite_manifest(c.artifact(), c.inp / "n.pt", _newer)],
        ("newer ptsq",),
    ),
    Case("info-plain-torchscript", lambda c: ["info", _plain_ts(c.inp / "ts.pt")], ("no ptsq manifest",)),
    Case("info-malicious-pickle", lambda c: ["info", _malicious(c.inp / "m.pt", c.marker)], ("not a ptsq artifact",)),
    Case(
        "bench-malicious-model", lambda c: ["bench", _malicious(c.inp / "m.pt", c.marker), "--runs", "2"], ("pickled",)
    ),
    Case(
        "bench-malicious-weights",
        lambda c: [
            "bench",
            spec("SmallNet"),
            "--weights",
            _malicious(c.inp / "w.pth", c.marker, lambda p: {"a": p}),
            "--input-size",
            "32",
        ],
        ("pickled",),
    ),
    Case(
        "bench-truncated-artifact",
        lambda c: ["bench", spec("SmallNet"), _cut(c.artifact(), c.inp / "cut.pt"), "--input-size", "32"],
        ("cut.pt",),
    ),
    Case(
        "bench-bad-threads",
        lambda c: ["bench", spec("SmallNet"), "--threads", "0", "--input-size", "32"],
        ("--threads",),
    ),
    Case(
        "bench-bad-batch-size",
        lambda c: ["bench", spec("SmallNet"), "--batch-size", "1,x", "--input-size", "32"],
        ("--batch-size",),
    ),
]


def _face_weights(ctx: Ctx) -> Path:
    p = ctx.inp / "face.pth"
    torch.save(FaceNet().state_dict(), p)
    return p


def _cut(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) * 2 // 3])
    return dst


def _exists(ctx: Ctx) -> Path:
    p = ctx.inp / "taken.pt"
    p.write_bytes(b"somebody's file")
    return p


def _plain_ts(path: Path) -> Path:
    torch.jit.save(torch.jit.script(SmallNet().eval()), path)
    return path


def _commands() -> set[str]:
    from ptsq.cli.main import app

    return {c.name for c in app.registered_commands}


if "eval" in _commands():  # commands join the catalogue as they land
    CASES += [
        Case("eval-missing-data", lambda c: ["eval", c.artifact(), "--data", c.inp / "nope"], ("does not exist",)),
        Case(
            "eval-tampered-artifact",
            lambda c: ["eval", _rewrite_manifest(c.artifact(), c.inp / "t.pt", _tampered), "--data", c.photos],
            ("modified",),
        ),
        Case(
            "eval-malicious-model",
            lambda c: ["eval", _malicious(c.inp / "m.pt", c.marker), "--data", c.photos],
            ("pickled",),
        ),
    ]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("catalogue")
    torch.manual_seed(0)
    w = base / "small.pth"
    torch.save(randomize_bn(SmallNet()).state_dict(), w)
    photos = base / "photos"
    write_photos(photos, 6, size=(40, 48))
    return {"weights": w, "photos": photos, "base": base}


@pytest.fixture(scope="module")
def built_artifact(shared: dict[str, Path]) -> Path:
    return _artifact(shared["base"], shared["weights"], shared["photos"])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_catalogue(case: Case, tmp_path: Path, shared, request, monkeypatch) -> None:
    reason = case.skip()
    if reason:
        pytest.skip(reason)
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    out.mkdir()
    photos = inp / "photos"
    write_photos(photos, 6, size=(40, 48))
    weights = inp / "small.pth"
    weights.write_bytes(shared["weights"].read_bytes())

    def artifact() -> Path:
        dst = inp / "art.pt"
        if not dst.exists():
            dst.write_bytes(request.getfixturevalue("built_artifact").read_bytes())
        return dst

    ctx = Ctx(inp, out, weights, photos, tmp_path / "PWNED", monkeypatch, artifact)
    args = case.build(ctx)
    before = tree_digest(inp)
    try:
        res = run_cli(*[str(a) for a in args])
    finally:
        restore = getattr(Ctx, "_restore", None)
        if restore:
            restore()
    assert not ctx.marker.exists(), "pickled code was executed"
    assert "Traceback" not in res.stdout + res.stderr
    assert tree_digest(inp) == before, "an input was modified"
    if case.success:
        assert res.code == 0, res.stderr
        assert [p.name for p in out.iterdir()] == ["o.pt"]
        from ptsq import load

        load(out / "o.pt")  # a complete artifact whose manifest verifies
        for w in case.warns:
            assert w in res.stderr, (w, res.stderr)
        return
    assert_clean_error(res, *case.needles)
    assert list(out.iterdir()) == [], "output or temporary files left behind"


# --------------------------------------------------------------------------- real file systems


@pytest.mark.skipif(_can_mount() is not None, reason="needs root to mount a small tmpfs")
@pytest.mark.parametrize("kind", ["read-only", "full"])
def test_real_read_only_and_full_file_systems(kind: str, tmp_path: Path, shared) -> None:
    options = "ro,size=1m" if kind == "read-only" else "size=16k"
    with _tmpfs(tmp_path / "mnt", options) as mnt:
        res = run_cli("quantize", spec("SmallNet"), "--weights", shared["weights"], "--calib", shared["photos"],
                      "-o", mnt / "o.pt", *QFAST)  # fmt: skip
        assert_clean_error(res, "not writable" if kind == "read-only" else "no space left")
        assert list(mnt.iterdir()) == []


# --------------------------------------------------------------------------- concurrency and determinism


def _quantize_proc(repo: Path, weights: Path, calib: Path, out: Path, seed: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "src"), str(repo)]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ptsq.cli.main", "quantize", spec("SmallNet"), "--weights", str(weights),
           "--calib", str(calib), "-o", str(out), "--force", "--seed", str(seed), *QFAST, "-q"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_two_writers_of_one_output_and_determinism(tmp_path, shared, repo_root) -> None:
    """Four processes at once: seeds 0 and 1 both write same.pt; seeds 0 and 1 also write ref0/ref1.pt.

    same.pt must be byte-identical to ref0.pt or ref1.pt: one complete artifact, never a mix, and
    the same model, data and seed give the same bytes in another process (speed guard off).
    """
    calib = tmp_path / "calib.pt"
    torch.save(torch.randn(40, 3, 32, 32), calib)
    out = tmp_path / "out"
    out.mkdir()
    jobs = [(out / "same.pt", 0), (out / "same.pt", 1), (out / "ref0.pt", 0), (out / "ref1.pt", 1)]
    procs = [_quantize_proc(repo_root, shared["weights"], calib, o, seed) for o, seed in jobs]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    same, ref0, ref1 = ((out / n).read_bytes() for n in ("same.pt", "ref0.pt", "ref1.pt"))
    assert ref0 != ref1  # the seed matters, so the comparison below can tell the writers apart
    assert same in (ref0, ref1)
    from ptsq import load

    m = load(out / "same.pt")  # and it loads, with a manifest that verifies
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert sorted(p.name for p in out.iterdir()) == ["ref0.pt", "ref1.pt", "same.pt"]  # no temporary leftovers


def test_in_process_repeat_gives_identical_outputs(shared) -> None:
    """In one process TorchScript numbers its classes (___torch_mangle_N): bytes differ, weights and outputs do not."""
    import ptsq
    from ptsq.data.tensors import CalibrationTensors

    path = shared["base"] / "calib_inproc.pt"
    torch.save(torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(3)), path)
    model = SmallNet()
    model.load_state_dict(torch.load(shared["weights"], weights_only=True))
    runs = []
    for _ in range(2):
        calib = CalibrationTensors(path, num=16, batch_size=4)
        qm = ptsq.quantize(model, calib, config=ptsq.QuantConfig(speed_guard=0, speed={"check": False}), progress=False)
        runs.append(qm)
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(runs[0](x), runs[1](x))
    sa, sb = (r.module.state_dict() for r in runs)
    assert sa.keys() == sb.keys()
    for k in sa:
        va, vb = sa[k], sb[k]
        if isinstance(va, torch.Tensor):
            assert torch.equal(va.int_repr() if va.is_quantized else va, vb.int_repr() if vb.is_quantized else vb), k
    assert runs[0].manifest == runs[1].manifest


def test_pickle_payload_really_creates_the_marker(tmp_path) -> None:
    """Guard for the catalogue: the payload used above does run when unpickled without protection."""
    marker = tmp_path / "ran"
    data = pickle.dumps(Payload(marker))
    pickle.loads(data)  # that is the point
    assert marker.exists()
