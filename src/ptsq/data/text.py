"""Text calibration: one sentence per line, tokenized by a local Hugging Face tokenizer into model inputs.

``--calib sentences.txt --tokenizer DIR --max-length 128``: the tokenizer folder is read with
``transformers.AutoTokenizer`` strictly offline (``local_files_only=True``, ``HF_HUB_OFFLINE=1``);
nothing is downloaded. Blank lines are skipped. A seeded subset of ``num`` sentences is read in file
order, in batches of ``batch_size``; each batch is padded to its longest sentence and truncated at
``max_length`` tokens.

What a batch holds follows the model's ``forward``: when it names ``input_ids``, a dict of the
tokenizer outputs it takes (``input_ids``, ``attention_mask``, ``token_type_ids``); otherwise the
tuple ``(input_ids, attention_mask)`` cut to as many inputs as ``forward`` takes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptsq.calibration import positional_arity
from ptsq.data.images import check_sampling
from ptsq.data.source import CalibrationSource
from ptsq.errors import ConfigError, DataError, first_line

TOKENIZER_HINT = (
    "pass --tokenizer DIR: a local Hugging Face tokenizer folder (tokenizer.json, or vocab.txt + tokenizer_config.json)"
)
TOKENIZER_OUTPUTS = ("input_ids", "attention_mask", "token_type_ids")
_TOKENIZER_FILES = (
    "tokenizer.json", "vocab.txt", "tokenizer_config.json", "vocab.json", "merges.txt", "spiece.model",
    "sentencepiece.bpe.model", "tokenizer.model",
)  # fmt: skip


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_tokenizer(folder: str | Path) -> Any:
    """A Hugging Face tokenizer from a local folder, offline; DataError when it is not one."""
    d = Path(folder).expanduser()
    if not d.exists():
        raise DataError(f"tokenizer folder '{d}' does not exist", TOKENIZER_HINT)
    if not d.is_dir():
        raise DataError(f"tokenizer '{d}' is a file, not a folder", TOKENIZER_HINT)
    if not any((d / f).is_file() for f in _TOKENIZER_FILES):
        raise DataError(
            f"tokenizer folder '{d}' holds no tokenizer files ({', '.join(_TOKENIZER_FILES[:3])}, ...)", TOKENIZER_HINT
        )
    try:
        import transformers
    except ImportError:
        raise ConfigError(
            "reading a --tokenizer folder needs the transformers package", "pip install transformers"
        ) from None
    with _offline():
        try:
            transformers.logging.set_verbosity_error()
            tok = transformers.AutoTokenizer.from_pretrained(str(d), local_files_only=True)
        except Exception as exc:  # transformers reports a non-tokenizer folder in many ways
            why = f"{type(exc).__name__}: {first_line(exc, 120)}"
            raise DataError(f"tokenizer folder '{d}' is not a Hugging Face tokenizer ({why})", TOKENIZER_HINT) from None
    if not callable(tok):
        raise DataError(f"tokenizer folder '{d}' did not give a tokenizer", TOKENIZER_HINT)
    return tok


def read_lines(path: str | Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"text file '{p}' does not exist", "check the path given to --calib")
    if p.is_dir():
        raise DataError(f"text file '{p}' is a folder", "give a .txt file with one sentence per line")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"text file '{p}' is not UTF-8 text (byte {exc.start})", "save it as UTF-8, one sentence per line"
        ) from None
    except OSError as exc:
        raise DataError(f"text file '{p}' cannot be read: {exc.strerror}", "check the file") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"text file '{p}' has no lines of text", "put one sentence per line")
    return lines


class TextInputs(CalibrationSource):
    """Tokenized batches from a seeded subset of a text file's lines (see the module doc)."""

    def __init__(
        self,
        path: str | Path,
        tokenizer: str | Path | Any,
        model: nn.Module | None = None,
        *,
        max_length: int = 128,
        num: int = 300,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        check_sampling(num, batch_size, seed)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ConfigError(f"--max-length {max_length!r} must be a positive integer", "e.g. --max-length 128")
        self.path = Path(path).expanduser()
        self.source, self.num, self.batch_size, self.seed = str(path), num, batch_size, seed
        self.max_length = max_length
        self.lines = read_lines(self.path)
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
        self.tokenizer_source = str(tokenizer) if isinstance(tokenizer, (str, Path)) else type(tokenizer).__name__
        self.found = len(self.lines)
        if num >= self.found:
            self._index = list(range(self.found))
        else:
            gen = torch.Generator().manual_seed(seed)
            self._index = sorted(torch.randperm(self.found, generator=gen)[:num].tolist())
        self.keys, self.positional = self._layout(model)
        self.used = 0

    @staticmethod
    def _layout(model: nn.Module | None) -> tuple[tuple[str, ...], int | None]:
        """(tokenizer outputs to pass, None for keywords or how many positional inputs)."""
        if model is None:
            return TOKENIZER_OUTPUTS[:2], None
        from ptsq.data.tensor_inputs import forward_parameters

        params, _ = forward_parameters(model)
        if "input_ids" in params:
            return tuple(k for k in TOKENIZER_OUTPUTS if k in params), None
        arity = positional_arity(model)
        return TOKENIZER_OUTPUTS[:2], min(2, arity) if arity else 2

    @property
    def expected_images(self) -> int:
        return len(self._index)

    def __iter__(self) -> Iterator[Any]:
        self.used = 0
        for start in range(0, len(self._index), self.batch_size):
            chunk = [self.lines[i] for i in self._index[start : start + self.batch_size]]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            self.used += len(chunk)
            if self.positional is None:
                yield {k: enc[k] for k in self.keys if k in enc}
            else:
                yield tuple(enc[k] for k in self.keys[: self.positional])

    def summary(self) -> dict[str, object]:
        return {**super().summary(), "tokenizer": self.tokenizer_source, "max_length": self.max_length}


__all__ = ["TOKENIZER_OUTPUTS", "TextInputs", "load_tokenizer", "read_lines"]
