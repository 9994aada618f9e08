"""One self-describing file: the int8 model plus a manifest embedded in it.

The manifest is JSON with a checksum over its own canonical form, so an edited manifest is
detected; it records versions, backend, input spec, preprocessing, calibration, fidelity and
the per-layer precision map. Writes are atomic: a temporary file in the target folder, then rename.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptsq.errors import ArtifactError, OutputPathError

if TYPE_CHECKING:
    from torch import nn

FORMAT = "ptsq-artifact"
FORMAT_VERSION = 1


def _canonical(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=True)


def seal(manifest: dict[str, Any]) -> str:
    """Manifest JSON with ``format``, ``format_version`` and a checksum of the rest."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    body.setdefault("format", FORMAT)
    body.setdefault("format_version", FORMAT_VERSION)
    digest = hashlib.sha256(_canonical(body).encode()).hexdigest()
    return json.dumps({**body, "manifest_sha256": digest}, sort_keys=True, indent=1, allow_nan=True)


def unseal(text: str, path: Path) -> dict[str, Any]:
    """Parse and verify a manifest; ArtifactError when missing, edited or too new."""
    if not text:
        raise ArtifactError(
            f"'{path}' has no ptsq manifest (a plain TorchScript file, or not made by ptsq)",
            "quantize the model with 'ptsq quantize' to get an artifact",
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"the manifest in '{path}' is not valid JSON ({exc.msg})", "re-create the artifact"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArtifactError(f"'{path}' does not carry a ptsq manifest", "re-create the artifact with 'ptsq quantize'")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ArtifactError(
            f"'{path}' was written by a newer ptsq (artifact format {version!r}, this ptsq reads {FORMAT_VERSION})",
            "upgrade ptsq: pip install -U ptsq",
        )
    claimed = data.get("manifest_sha256")
    body = {k: v for k, v in data.items() if k != "manifest_sha256"}
    if claimed != hashlib.sha256(_canonical(body).encode()).hexdigest():
        raise ArtifactError(
            f"the manifest in '{path}' was modified after it was written (checksum mismatch)",
            "do not trust this file; re-create it with 'ptsq quantize'",
        )
    return data


def state_hash(model: nn.Module) -> str:
    """sha256 over the model's parameters and buffers, by name: identifies the source weights."""
    import torch  # here, not at the top: reading a manifest must not need torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if not isinstance(t, torch.Tensor):
            continue
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        if t.is_quantized:
            t = t.int_repr()
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_output_path(path: str | os.PathLike[str], force: bool) -> Path:
    """Fail early, before minutes of work, if ``path`` cannot be written."""
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise OutputPathError(f"output '{out}' is a folder", "give a file name, e.g. -o model_int8.pt")
    if not parent.is_dir():
        raise OutputPathError(
            f"the output folder '{parent}' does not exist",
            f"create it first (mkdir -p '{parent}') or choose another -o",
        )
    if out.exists() and not force:
        raise OutputPathError(f"output '{out}' already exists", "pass --force to overwrite it, or choose another -o")
    if not os.access(parent, os.W_OK):
        raise OutputPathError(f"the output folder '{parent}' is not writable", "choose another -o")
    return out


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_error(path: Path, exc: OSError) -> OutputPathError:
    """One clean error for every way writing the output can fail at the OS level."""
    where = path.parent if str(path.parent) else Path(".")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return OutputPathError(
            f"no space left on the device while writing '{path}' ({exc.strerror})",
            "free disk space or choose another -o; nothing was written",
        )
    if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return OutputPathError(
            f"cannot write '{path}': {exc.strerror} (read-only or protected location)", "choose a writable location"
        )
    return OutputPathError(
        f"cannot write '{path}' in '{where}': {exc.strerror or exc}", "choose a writable folder for -o"
    )


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path for ``path``; on success rename it into place, else delete it.

    The temporary file sits in a private hidden folder beside ``path`` (same file system, so the
    rename is atomic) and has ``path``'s own name, so formats that record their file name record
    the real one. Two writers of the same ``path`` never share a temporary file: the last rename
    wins and the result is always one complete file. Any OS error becomes :class:`OutputPathError`.
    """
    parent = path.parent if str(path.parent) else Path(".")
    try:
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise _write_error(path, exc) from None
    tmp = tmpdir / path.name
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        try:  # keep the mode of a file being replaced; a new file gets the usual 0666 & ~umask
            mode = path.stat().st_mode & 0o777
        except OSError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        raise _write_error(path, exc) from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def write(path: Path, writer: Callable[[Path], Any], *, force: bool = False) -> Any:
    """Run ``writer(tmp_path)`` and atomically move the result to ``path``."""
    check_output_path(path, force)
    with atomic_path(path) as tmp:
        return writer(tmp)


def check_readable(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise ArtifactError(f"artifact '{p}' does not exist", "check the path")
    if p.is_dir():
        raise ArtifactError(f"artifact '{p}' is a folder, not a file", "give the .pt file written by 'ptsq quantize'")
    if p.stat().st_size == 0:
        raise ArtifactError(f"artifact '{p}' is empty (0 bytes)", "re-create it with 'ptsq quantize'")
    return p
