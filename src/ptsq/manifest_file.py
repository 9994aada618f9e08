"""An artifact's manifest, read straight from the file: no engine runtime, no model deserialisation.

Every engine embeds the same sealed manifest in its own container, so reading it needs only the
container format: TorchScript (fx) and torch.export (pt2e) archives are zip files holding
``<archive>/extra/ptsq_manifest.json``; the OpenVINO artifact is a zip with ``ptsq_openvino/manifest.json``;
an ONNX model keeps it in ``metadata_props`` (read here with a few lines of protobuf wire-format
walking, so neither ``onnx`` nor ``onnxruntime`` is imported). ``ptsq info``, ``ptsq report`` and
anything else that only describes an artifact can use :func:`read_manifest`; running it still
needs :func:`ptsq.load`.
"""

from __future__ import annotations

import mmap
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

from ptsq.errors import ArtifactError

# zip entry names that hold the manifest (kept in step with the engines' save(); a test compares them)
ZIP_SUFFIX = "/extra/ptsq_manifest.json"  # torch.jit.save / torch.export.save extra files
OPENVINO_ENTRY = "ptsq_openvino/manifest.json"
ONNX_KEY = "ptsq_manifest"
_ONNX_METADATA_FIELD = 14  # ModelProto.metadata_props (repeated StringStringEntryProto: key=1, value=2)


class _Truncated(Exception):
    pass


def _varint(buf: memoryview | bytes, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise _Truncated
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview | bytes, start: int, end: int) -> Any:
    """(field number, wire type, payload start, payload end) of each top-level field in ``buf[start:end]``."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, nxt = _varint(buf, pos, end)
        elif wire == 1:
            nxt = pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            nxt = pos + length
        elif wire == 5:
            nxt = pos + 4
        else:  # groups (3, 4) are not used by onnx.proto; anything else is not protobuf
            raise _Truncated
        if nxt > end:
            raise _Truncated
        yield number, wire, pos, nxt
        pos = nxt


def onnx_metadata(path: Path) -> dict[str, str] | None:
    """``metadata_props`` of an ONNX file as a dict, or None if the file is not a well-formed ModelProto."""
    with open(path, "rb") as f:
        if f.read(1) != b"\x08":  # a ModelProto starts with ir_version (field 1, varint)
            return None
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            buf = memoryview(mm)
            try:
                props: dict[str, str] = {}
                for number, wire, a, b in _fields(buf, 0, len(buf)):
                    if number != _ONNX_METADATA_FIELD or wire != 2:
                        continue
                    entry: dict[int, str] = {}
                    for n, w, x, y in _fields(buf, a, b):
                        if n in (1, 2) and w == 2:
                            entry[n] = bytes(buf[x:y]).decode("utf-8", errors="replace")
                    props[entry.get(1, "")] = entry.get(2, "")
                return props
            except _Truncated:
                return None
            finally:
                buf.release()


def _is_torchscript(names: list[str]) -> bool:
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def _zip_engine(names: list[str]) -> str | None:
    if OPENVINO_ENTRY in names:
        return "openvino"
    if _is_torchscript(names):
        return "fx"
    if any(n.endswith("/archive_format") for n in names):
        return "pt2e"  # torch.export
    return None


def read_manifest_text(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(the engine whose container ``path`` is, the sealed manifest JSON; '' for a plain TorchScript file).

    Zip members are CRC-checked (cheap next to loading the model), so a damaged artifact is reported here
    too. ArtifactError when the file is not a container any ptsq engine writes.
    """
    from ptsq.artifact import check_readable

    p = check_readable(path)
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
                entry = next((n for n in names if n == OPENVINO_ENTRY or n.endswith(ZIP_SUFFIX)), None)
                engine = _zip_engine(names) or ("zip" if entry else None)  # a manifest in an unknown layout
                bad = zf.testzip() if engine else None
                text = zf.read(entry).decode("utf-8", errors="replace") if engine and entry else ""
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
            raise ArtifactError(f"'{p}' is damaged ({exc})", "re-create it with 'ptsq quantize'") from None
        if bad is not None:
            raise ArtifactError(f"'{p}' is damaged (checksum error in {bad})", "re-create it with 'ptsq quantize'")
        if engine:
            return engine, text  # '': unseal() explains that a plain TorchScript file has no manifest
    else:
        props = onnx_metadata(p)
        if props is not None:  # a well-formed ModelProto; '' when it carries no ptsq manifest
            return "onnx", props.get(ONNX_KEY, "")
    raise ArtifactError(
        f"'{p}' is not a ptsq artifact (truncated, or not a file ptsq wrote)", "re-create it with 'ptsq quantize'"
    )


def manifest_text(path: str | os.PathLike[str]) -> str:
    """The sealed manifest JSON embedded in ``path`` ('' for a plain TorchScript file without one)."""
    return read_manifest_text(path)[1]


def artifact_format(path: str | os.PathLike[str]) -> str | None:
    """The engine whose format ``path`` has, or None if it is not a readable ptsq artifact."""
    try:
        engine, text = read_manifest_text(path)
    except ArtifactError:
        return None
    return engine if text else None


def info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``ptsq info`` shows: the path, its size and the verified manifest."""
    p = Path(path)
    manifest = read_manifest(p)  # first: it names a missing or unreadable file
    return {"path": str(p), "bytes": p.stat().st_size, **manifest}


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The verified manifest of the artifact at ``path`` (checksum and format version checked)."""
    from ptsq.artifact import unseal

    return unseal(manifest_text(path), Path(path))


def runtime_of(manifest: dict[str, Any]) -> str:
    """What runs the artifact: the engine's runtime as recorded, else TorchScript on torch's quantized kernels."""
    details = manifest.get("details") or {}
    if details.get("runtime"):
        return str(details["runtime"])
    if manifest.get("engine", "fx") == "fx":
        return f"TorchScript, torch quantized engine {manifest.get('quantized_engine', '?')}"
    return str(manifest.get("engine", "?"))


# how each engine's artifact opens without ptsq (each claim is checked by tests/integration/test_report_engines.py)
PLAIN_LOADERS = {
    "fx": "torch.jit.load(path)",
    "pt2e": "import torchao.quantization.pt2e.quantize_pt2e; torch.export.load(path).module()",
    "onnx": "onnxruntime.InferenceSession(path), or openvino.Core().read_model(path)",
    "openvino": "a zip: unzip it, then openvino.Core().read_model('ptsq_openvino/model.xml')",
}


def plain_loader(manifest: dict[str, Any]) -> str:
    """How to open the artifact without ptsq (``ptsq.load`` opens every kind)."""
    if manifest.get("fp32_islands"):  # its program calls ops that ptsq registers from the stored scripts
        return "none: its fp32 islands (TorchScript inside the .pt2) need ptsq.load(path)"
    return PLAIN_LOADERS.get(str(manifest.get("engine")), "ptsq.load(path)")


__all__ = [
    "PLAIN_LOADERS", "artifact_format", "info", "manifest_text", "onnx_metadata", "plain_loader", "read_manifest",
    "read_manifest_text", "runtime_of",
]  # fmt: skip
