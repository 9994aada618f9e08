"""The PT2E artifact: a ``torch.export`` program (.pt2) with ptsq's manifest inside.

PyTorch loads it without ptsq or the model's code (unless it has fp32 islands, below)::

    import torch, torch._inductor.compile_fx     # registers the quantize/dequantize ops the program calls
    ep = torch.export.load("model_int8.pt2")
    y = ep.module()(x)                            # reference kernels: right, slow

    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # registers the int8 lowering
    static = torch.export.export(ep.module(), (x,), strict=False).module()  # at x's shapes: C++ wrapper
    with torch.no_grad():                          # freezing (inference only) prepacks the int8 weights
        fast = torch._inductor.compile(static, [x], {"freezing": True, "cpp_wrapper": True})

A program with fp32 islands (submodules ``torch.export`` could not capture, see :mod:`.islands`) calls
custom ``ptsq_island`` ops, and needs ptsq to load: the islands' TorchScript archives are stored in the
.pt2 (``ptsq_islands/<op>``, their sha256 and output specs in the manifest), and :func:`open_program`
checks them and registers the ops before ``torch.export.load`` reads the program.

The manifest (``extra/ptsq_manifest.json``) records ``program_sha256``, a digest of the program's graph
and tensors: a program edited after it was written is refused before it is deserialised, as is a
program written by another torch version (exported programs are not portable across versions).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptsq import artifact
from ptsq.engines.pt2e.capture import batch2, export_explanation
from ptsq.engines.pt2e.islands import Island, IslandSpec, op_name, register
from ptsq.errors import ArtifactError, QuantizationError, first_line
from ptsq.reproducible import pin_serialization_id

MANIFEST_NAME = "ptsq_manifest.json"
ISLANDS_KEY = "fp32_islands"  # manifest: the islands' ops, sha256 and output specs
ISLAND_DIR = "ptsq_islands/"  # their TorchScript archives, one record each
_PROGRAM = re.compile(r"^[^/]+/(models|data)/")  # graph and tensors; not extra/ files or archive ids


def is_pt2(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("archive_format") for n in names) and not any(n.endswith("constants.pkl") for n in names)


def program_digest(data: bytes) -> str:
    """sha256 over the names and bytes of the archive's graph and tensor records."""
    h = hashlib.sha256()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in sorted(n for n in zf.namelist() if _PROGRAM.match(n)):
            h.update(name.encode())
            h.update(zf.read(name))
    return h.hexdigest()


def _serialise(ep: torch.export.ExportedProgram, manifest: str | None) -> bytes:
    buf = io.BytesIO()
    extra = {MANIFEST_NAME: manifest} if manifest is not None else None
    torch.export.save(ep, buf, extra_files=extra)
    return buf.getvalue()


def _deflate(data: bytes, records: dict[str, bytes] | None = None) -> bytes:
    """The same archive with every record deflated (torch.export.load reads either), plus ``records``
    (name inside the archive's folder -> bytes).

    The graph's JSON shrinks ~10x and the weight zero points (all 0) to nothing: MobileNetV2's program
    goes from 4.6 to 3.4 MB (FX's TorchScript artifact: 3.9 MB; fp32: 13.6 MB).
    """
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            record = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
            record.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(record, zin.read(info), compresslevel=6)
        folder = zin.namelist()[0].split("/")[0]
        for name, blob in (records or {}).items():
            record = zipfile.ZipInfo(f"{folder}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            record.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(record, blob, compresslevel=6)
    return out.getvalue()


def save_program(
    module: nn.Module, path: Path, manifest_json: str, example_args: tuple[Any, ...], islands: Sequence[Island] = ()
) -> None:
    """Export ``module`` (batch dimension dynamic) and write it with the manifest (and the TorchScript of
    its fp32 islands, see :mod:`.islands`) to ``path``."""
    from ptsq.engines.pt2e.capture import export

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ep = export(module, batch2(example_args), strict=False)
        except Exception as exc:
            raise QuantizationError(
                f"torch.export of the int8 program failed: {export_explanation(exc)}", "try --engine fx"
            ) from exc
        ep._example_inputs = None  # the archive would carry a batch of example inputs (1.2 MB at 224x224)
        for node in ep.graph.nodes:  # source paths of this machine and pass history: not the user's business;
            for key in ("stack_trace", "from_node", "nn_module_stack"):  # the module stack holds object ids
                node.meta.pop(key, None)  # (the layer names are in the manifest's precision map)
        digest = program_digest(_serialise(ep, None))
        manifest = {**json.loads(manifest_json), "program_sha256": digest}
        records = {}
        if islands:
            manifest[ISLANDS_KEY] = [i.manifest_entry() for i in islands]
            records = {ISLAND_DIR + i.op: i.script for i in islands}
        data = _deflate(pin_serialization_id(_serialise(ep, artifact.seal(manifest))), records)
    if program_digest(data) != digest:  # serialisation must be deterministic for the digest to mean anything
        raise QuantizationError("the exported program serialised differently twice", "report this model to ptsq")
    Path(path).write_bytes(data)


def read_manifest_text(data: bytes) -> str:
    """The manifest JSON inside a .pt2 archive ('' if there is none)."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = [n for n in zf.namelist() if n.endswith("extra/" + MANIFEST_NAME)]
        return zf.read(names[0]).decode() if names else ""


def _release(version: str) -> str:
    return version.split("+")[0]


def check_program(data: bytes, path: Path) -> str:
    """The manifest text, after checking the program's torch version and digest (ArtifactError if not)."""
    text = read_manifest_text(data)
    try:
        manifest = json.loads(text) if text else {}
    except ValueError:
        return text  # the manifest check names this
    written = str(manifest.get("torch_version", ""))
    if written and _release(written) != _release(torch.__version__):
        raise ArtifactError(
            f"'{path}' holds a program exported with torch {written}; this is torch {torch.__version__}, "
            "and exported programs do not load across versions",
            f"re-create it here with 'ptsq quantize', or load it where torch {_release(written)} is installed",
        )
    claimed = manifest.get("program_sha256")
    if claimed and claimed != program_digest(data):
        raise ArtifactError(
            f"the program in '{path}' was modified after it was written (checksum mismatch)",
            "do not trust this file; re-create it with 'ptsq quantize'",
        )
    return text


def open_program(path: Path) -> tuple[bytes, str]:
    """(the file's bytes, manifest JSON): checked and its fp32 islands registered, the program not yet read
    (reading it takes seconds; a cached compiled package does not need it)."""
    data = Path(path).read_bytes()
    text = check_program(data, path)
    register_islands(data, text, path)  # the program calls their ops: registered before it is read
    return data, text


def read_program(data: bytes) -> nn.Module:
    """The exported program in ``data`` (from :func:`open_program`) as a runnable module."""
    import torch._inductor.compile_fx  # registers the quantized_decomposed ops the program calls

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.load(io.BytesIO(data))
    return ep.module()


def register_islands(data: bytes, text: str, path: Path) -> int:
    """Register the fp32 islands' ops from the scripts stored in the archive; how many there are.

    Each script must match the sha256 in the (sealed) manifest and the op name the program calls."""
    manifest = artifact.unseal(text, path) if text else {}
    entries = manifest.get(ISLANDS_KEY) or []
    if not entries:
        return 0
    tampered = ArtifactError(
        f"the fp32 islands in '{path}' were modified after it was written (checksum mismatch)",
        "do not trust this file; re-create it with 'ptsq quantize'",
    )
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        stored = {n.split("/", 1)[1]: n for n in zf.namelist() if "/" in n}
        for entry in entries:
            name = stored.get(ISLAND_DIR + str(entry.get("op")))
            script = zf.read(name) if name else b""
            try:
                spec = IslandSpec.from_json(entry["spec"])
            except (KeyError, TypeError, ValueError):
                raise tampered from None
            if hashlib.sha256(script).hexdigest() != entry.get("sha256") or op_name(script, spec) != entry["op"]:
                raise tampered
            try:
                register(entry["op"], script, spec)
            except Exception as exc:  # TorchScript of another torch, or a broken archive
                raise ArtifactError(
                    f"the fp32 island {entry['op']} in '{path}' cannot be loaded: {first_line(exc)}",
                    "re-create the file with 'ptsq quantize' where it will run",
                ) from exc
    return len(entries)
