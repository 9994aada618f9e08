"""The PT2E artifact: a ``torch.export`` program (.pt2) with ptsq's manifest inside.

PyTorch loads it without ptsq or the model's code::

    import torch, torch._inductor.compile_fx     # registers the quantize/dequantize ops the program calls
    ep = torch.export.load("model_int8.pt2")
    y = ep.module()(x)                            # reference kernels: right, slow

    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # registers the int8 lowering
    static = torch.export.export(ep.module(), (x,), strict=False).module()  # at x's shapes: C++ wrapper
    with torch.no_grad():                          # freezing (inference only) prepacks the int8 weights
        fast = torch._inductor.compile(static, [x], {"freezing": True, "cpp_wrapper": True})

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
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptsq import artifact
from ptsq.engines.pt2e.capture import batch2, export_explanation
from ptsq.errors import ArtifactError, QuantizationError
from ptsq.reproducible import pin_serialization_id

MANIFEST_NAME = "ptsq_manifest.json"
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


def _deflate(data: bytes) -> bytes:
    """The same archive with every record deflated (torch.export.load reads either).

    The graph's JSON shrinks ~10x and the weight zero points (all 0) to nothing: MobileNetV2's program
    goes from 4.6 to 3.4 MB (FX's TorchScript artifact: 3.9 MB; fp32: 13.6 MB).
    """
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            record = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
            record.compress_type = zipfile.ZIP_DEFLATED
            zout.writestr(record, zin.read(info), compresslevel=6)
    return out.getvalue()


def save_program(module: nn.Module, path: Path, manifest_json: str, example_args: tuple[Any, ...]) -> None:
    """Export ``module`` (batch dimension dynamic) and write it with the manifest to ``path``."""
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
        data = _deflate(pin_serialization_id(_serialise(ep, artifact.seal(manifest))))
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


def load_program(path: Path) -> tuple[nn.Module, str]:
    """(the exported program as a runnable module, manifest JSON), after :func:`check_program`."""
    import torch._inductor.compile_fx  # registers the quantized_decomposed ops the program calls

    data = Path(path).read_bytes()
    text = check_program(data, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.load(io.BytesIO(data))
    return ep.module(), text
