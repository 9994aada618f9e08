"""Folders of image files → normalised tensors, for calibration and evaluation.

Pillow decodes; numpy and torch hold pixels (torchvision is deliberately not needed here).
Every way a file can fail to decode becomes an :class:`ImageDecodeError` with a short reason, so
calibration can skip bad files and report them instead of crashing half-way through.

Choices worth knowing:

* Transparent pixels are composited onto **black** (premultiplied alpha). Opaque pixels are
  unchanged, and black adds no brightness that the training data never had.
* 16-bit images are scaled by their real bit depth (``v / 257``), not clipped the way Pillow's
  ``convert("L")`` clips them to 255.
* Mean and std apply in the *output* channel order: with ``channels="bgr"``, ``mean[0]`` is blue.
* 8-bit images are resized as 8-bit (the same Pillow bilinear, antialiased resize a torchvision
  PIL pipeline does); high-bit-depth and float images are resized in float to keep precision.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ptsq.data.preprocess import Preprocess
from ptsq.data.source import CalibrationSource
from ptsq.errors import ConfigError, DataError, ImageDecodeError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# Formats Pillow may use, whatever the extension says. Keeping the list short stops a file
# named .jpg from reaching exotic plugins (EPS, for one, runs Ghostscript). MPO is how Pillow
# opens many phone-camera JPEGs; TIFF lets decode_image read 16-bit and float files.
_ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "DIB", "WEBP", "GIF", "TIFF", "PPM", "AVIF")

# Used when the user has switched Pillow's own guard off (MAX_IMAGE_PIXELS = None): a float copy
# of a bigger image would need gigabytes, and no calibration needs that much.
_FALLBACK_MAX_PIXELS = 178_956_970

_MAX_NAMED_SKIPS = 5
_truncation_lock = threading.Lock()


# --------------------------------------------------------------------------- finding files


def find_images(root: str | Path, *, max_images: int | None = None, what: str = "calibration folder") -> list[Path]:
    """Image files under ``root`` (recursive), in a sorted order independent of the file system.

    Hidden files and folders (names starting with ``.``) are skipped; extensions match
    :data:`IMAGE_EXTENSIONS` case-insensitively. ``max_images`` guards against pointing at a huge
    tree by accident: finding more raises :class:`DataError`. ``what`` names the folder in errors.
    """
    if max_images is not None and max_images < 1:
        raise ConfigError(f"max_images {max_images!r} must be at least 1", "pass e.g. --max-images 10000")
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{what} '{root}' does not exist", "pass the path of an existing folder of images")
    if not root.is_dir():
        raise DataError(
            f"{what} '{root}' is a file, not a folder",
            f"pass the folder that contains the images, e.g. '{root.parent}'",
        )

    found: list[Path] = []
    others: Counter[str] = Counter()
    for path in _walk_files(root, what):
        ext = path.suffix.lower()
        if ext in IMAGE_EXTENSIONS:
            found.append(path)
            if max_images is not None and len(found) > max_images:
                raise DataError(
                    f"{what} '{root}' holds more than {max_images} images",
                    "pass a larger --max-images or point at a smaller folder",
                )
        else:
            others[ext or "(no extension)"] += 1

    if not found:
        seen = sum(others.values())
        kinds = ", ".join(ext for ext, _ in others.most_common(3))
        detail = f"found {seen} other file(s): {kinds}" if seen else "the folder is empty"
        raise DataError(
            f"no image files in {what} '{root}' (looked for {', '.join(IMAGE_EXTENSIONS)}; {detail})",
            "put images in the folder (subfolders are searched too) or convert them to one of those formats",
        )
    # Sorting on path parts keeps each folder's files together and the order reproducible (every path
    # starts with root's parts, so whole parts sort as relative ones would, without a Path per file).
    found.sort(key=lambda p: p.parts)
    return found


def _walk_files(root: Path, what: str) -> Iterator[Path]:
    """Non-hidden files under root; follows symlinked folders but never loops."""

    def fail(exc: OSError) -> None:
        raise DataError(
            f"cannot list {what} '{exc.filename}': {exc.strerror or exc}",
            "check the folder's permissions, or point at a folder you can read",
        )

    seen_dirs: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, onerror=fail, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add((st.st_dev, st.st_ino))
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        base = Path(dirpath)
        for name in filenames:
            if not name.startswith(".") and (base / name).is_file():
                yield base / name


# --------------------------------------------------------------------------- decoding one file


def decode_image(path: str | Path, pre: Preprocess) -> torch.Tensor:
    """Decode one file into a float32 tensor of shape ``(pre.num_channels, *pre.size)``.

    Applies EXIF orientation, the mode handling described in the module docstring, a resize of
    the image to cover ``pre.resize_to`` (aspect kept), a centre crop to ``pre.size`` and
    ``(x * scale - mean) / std``. Raises :class:`ImageDecodeError` naming the file and the reason.
    """
    path = Path(path)
    img = _load(path)
    img = _to_working_mode(path, img, pre.channels)
    img = _resize_and_crop(img, pre)

    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == 1 and pre.num_channels == 3:
        arr = np.repeat(arr, 3, axis=2)
    if pre.channels == "bgr":
        arr = arr[:, :, ::-1]
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    arr = (arr * np.float32(pre.scale) - mean) / std
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _decode_error(path: Path, reason: str, hint: str) -> ImageDecodeError:
    reason = " ".join(reason.split())  # keep the message on one line
    return ImageDecodeError(f"cannot read image '{path}': {reason}", hint, path=path, reason=reason)


def _load(path: Path) -> Image.Image:
    """Open, check and fully decode ``path``; return an upright in-memory image (file closed)."""
    try:
        fh = open(path, "rb")  # closed by the with-block below
    except OSError as exc:
        raise _decode_error(path, f"cannot open file ({exc.strerror or exc})", "check the file is readable") from None
    with fh:
        try:
            head = fh.read(512)
            nbytes = os.fstat(fh.fileno()).st_size
        except OSError as exc:  # bad sector, dropped network mount, special file
            raise _decode_error(
                path, f"cannot read file ({exc.strerror or exc})", "check the file is readable"
            ) from None
        if nbytes == 0:
            raise _decode_error(path, "zero-byte file", "remove the empty file or replace it with the real image")
        fh.seek(0)
        with warnings.catch_warnings():
            # Local filters only: an oversized image must fail, not just warn, and metadata
            # complaints (odd EXIF, palette notes) would only flood a long calibration run.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
            try:
                with Image.open(fh, formats=_open_formats()) as img:
                    _check_dimensions(path, img.size)
                    with _strict_truncation():
                        img.load()  # force the full decode now so damage shows up here
                    return _upright(img)
            except ImageDecodeError:
                raise
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise _decode_error(path, _bomb_reason(str(exc)), _TOO_LARGE_HINT) from None
            except UnidentifiedImageError:
                kind, hint = _sniff(head)
                raise _decode_error(path, f"not an image (content is {kind})", hint) from None
            except MemoryError:
                raise _decode_error(path, "out of memory while decoding", _TOO_LARGE_HINT) from None
            except Exception as exc:  # Pillow raises many types on damaged data; all mean "bad file"
                if "truncated" in str(exc) or _declared_longer_than(head, nbytes):
                    raise _decode_error(
                        path, "truncated image", "the file was cut short (interrupted copy?); re-fetch or remove it"
                    ) from None
                detail = str(exc)[:100] or "no detail"
                raise _decode_error(
                    path, f"corrupt image data ({type(exc).__name__}: {detail})", "remove the file or replace it"
                ) from exc  # keep Pillow's traceback for debugging


_TOO_LARGE_HINT = "shrink or remove the image; if you trust it, raise PIL.Image.MAX_IMAGE_PIXELS before calling ptsq"


def _open_formats() -> tuple[str, ...]:
    Image.init()  # cheap after the first call; registers every plugin so OPEN is complete
    return tuple(f for f in _ALLOWED_FORMATS if f in Image.OPEN)


def _check_dimensions(path: Path, size: tuple[int, int]) -> None:
    """Reject absurd headers before any pixel data is decoded."""
    w, h = size
    if w < 1 or h < 1:
        raise _decode_error(path, f"image has no pixels ({w} x {h})", "remove the file or replace it")
    limit = Image.MAX_IMAGE_PIXELS or _FALLBACK_MAX_PIXELS
    if w * h > limit:
        raise _decode_error(path, f"image too large: {w} x {h} pixels exceeds the limit of {limit}", _TOO_LARGE_HINT)


def _bomb_reason(pillow_message: str) -> str:
    # Pillow refuses before the size is available to us; reuse the numbers from its message.
    nums = re.findall(r"(\d+) pixels", pillow_message)
    if len(nums) >= 2:
        return f"image too large: {nums[0]} pixels exceeds the limit of {nums[1]} (possible decompression bomb)"
    return f"image too large ({pillow_message})"


@contextmanager
def _strict_truncation() -> Iterator[None]:
    """Make Pillow raise on truncated data even if some other code set LOAD_TRUNCATED_IMAGES."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        yield
        return
    with _truncation_lock:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = True


def _declared_longer_than(head: bytes, nbytes: int) -> bool:
    """True if a RIFF (WebP) header promises more bytes than the file has: a cut-short download."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 12:
        return int.from_bytes(head[4:8], "little") + 8 > nbytes
    return False


def _upright(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # damaged EXIF should not cost a good image; keep the stored orientation
        return img.copy()


def _sniff(head: bytes) -> tuple[str, str]:
    """Name what a file holds when Pillow cannot identify it, and how to fix it."""
    replace = "remove the file or replace it with the real image"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer", "fetch the real files with 'git lfs pull'"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftyphevc", b"ftypavif"):
        return "a HEIC/AVIF image this Pillow cannot read", "convert the file to JPEG or PNG"
    for magic, kind in ((b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "gzip data")):
        if head.startswith(magic):
            return kind, replace
    if b"\x00" not in head:
        text = head.decode("utf-8", errors="replace")
        printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
        if text and printable >= 0.95 * len(text):
            if "<html" in text.lower() or text.lstrip().lower().startswith("<!doctype"):
                return "HTML", "the download probably returned a web page; fetch the image again"
            return "text", replace
    return "unrecognised binary data", replace


def _to_working_mode(path: Path, img: Image.Image, channels: str) -> Image.Image:
    """Bring any Pillow mode to 8-bit "L"/"RGB" or float "F" (one band), values in [0, 255]."""
    gray = channels == "gray"
    mode = img.mode
    if mode.startswith("I;16"):
        return Image.fromarray(np.asarray(img, dtype=np.float32) / np.float32(257.0))
    if mode == "I":
        # 32-bit ints: 16-bit files land here with older Pillow, so values that fit 16 bits are
        # read as 16-bit; anything wider is taken as the full int32 range.
        arr = np.asarray(img, dtype=np.float64).clip(min=0)
        depth_max = 65535.0 if arr.max(initial=0) <= 65535 else float(2**31 - 1)
        return Image.fromarray((arr * (255.0 / depth_max)).astype(np.float32))
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise _decode_error(path, "non-finite pixel values (NaN or infinity)", "remove the file or fix its data")
        # Float images in [0, 1] are the common convention; anything else is read as 0..255.
        if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
            arr = arr * np.float32(255.0)
        return Image.fromarray(np.clip(arr, 0.0, 255.0).astype(np.float32))

    try:
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
            rgba = img.convert("RGBA")
            out = Image.new("RGB", rgba.size, (0, 0, 0))
            out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
            img = out
        elif mode == "1":
            img = img.convert("L")
        elif mode not in ("L", "RGB"):
            img = img.convert("RGB")  # P, CMYK, YCbCr, RGBX, ...
    except (ValueError, OSError) as exc:
        raise _decode_error(path, f"unsupported pixel mode {mode!r} ({exc})", "convert the file to 8-bit RGB") from None

    if gray and img.mode == "RGB":
        img = img.convert("L")  # ITU-R 601 luma, as torchvision's Grayscale does
    return img


def _resize_and_crop(img: Image.Image, pre: Preprocess) -> Image.Image:
    """Resize (bilinear, antialiased) to cover ``pre.resize_to`` keeping aspect, then centre-crop."""
    w, h = img.size
    rh, rw = pre.resize_to
    ch, cw = pre.size
    s = max(rh / h, rw / w)
    # max() guards against rounding a hair below the target on extreme aspect ratios.
    nw, nh = max(cw, round(w * s)), max(ch, round(h * s))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = round((nw - cw) / 2), round((nh - ch) / 2)
    return img.crop((left, top, left + cw, top + ch))


# --------------------------------------------------------------------------- datasets


def check_sampling(num: int, batch_size: int, seed: int) -> None:
    """Validate the subset size, batch size and seed shared by every calibration source."""
    for name, value in (("num", num), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} {value!r} must be a positive integer", f"pass e.g. {name}=32")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed {seed!r} must be an integer", "pass e.g. seed=0")


class ImageFolder(torch.utils.data.Dataset):
    """Map-style dataset over image files; ``dataset[i]`` is one decoded ``(C, H, W)`` tensor.

    ``source`` is a folder (searched with :func:`find_images`) or an explicit list of paths.
    A file that cannot be decoded raises :class:`ImageDecodeError` from ``__getitem__``.
    """

    def __init__(
        self, source: str | Path | Sequence[str | Path], pre: Preprocess, *, max_images: int | None = None
    ) -> None:
        if isinstance(source, (str, Path)):
            self.paths = find_images(source, max_images=max_images, what="image folder")
        else:
            self.paths = [Path(p) for p in source]
        self.pre = pre

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return decode_image(self.paths[index], self.pre)


class CalibrationImages(CalibrationSource):
    """Batches ``(B, C, H, W)`` from a seeded random subset of a folder, decoded lazily.

    Only one batch is in memory at a time. Each image's place in the subset comes from a hash of
    the seed and its path relative to ``root``, so the subset depends only on the seed and file
    names: not on listing order or Python's random-number algorithms, and adding one file to
    the folder moves at most one image in or out. Iterating again yields the same batches.
    Files that cannot be decoded are skipped and listed in :attr:`skipped` as ``(path, reason)``.
    """

    def __init__(
        self,
        root: str | Path,
        pre: Preprocess,
        *,
        num: int = 300,
        batch_size: int = 32,
        seed: int = 0,
        max_images: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        check_sampling(num, batch_size, seed)
        self.root = Path(root).expanduser()
        self.source = str(root)
        self.pre = pre
        self.num = num
        self.batch_size = batch_size
        self.seed = seed
        self.progress = progress
        all_paths = find_images(self.root, max_images=max_images)
        self.found = len(all_paths)
        self.paths: list[Path] = _seeded_subset(all_paths, self.root, num, seed)
        self.skipped: list[tuple[Path, str]] = []
        self.used = 0

    @property
    def expected_images(self) -> int:
        """Images in the chosen subset (an upper bound: unreadable ones are skipped)."""
        return len(self.paths)

    def __iter__(self) -> Iterator[torch.Tensor]:
        self.skipped = []
        self.used = 0
        batch: list[torch.Tensor] = []
        done = reported = 0
        for path in self.paths:
            try:
                batch.append(decode_image(path, self.pre))
            except ImageDecodeError as exc:
                self.skipped.append((path, exc.reason))
            done += 1
            if len(batch) == self.batch_size:
                yield self._emit(batch, done)
                batch, reported = [], done
        if batch:
            yield self._emit(batch, done)
        elif self.progress is not None and done != reported:
            self.progress(done)  # the tail held only skipped files
        if self.used == 0:
            first, reason = self.skipped[0]
            raise DataError(
                f"none of the {len(self.paths)} images in '{self.source}' could be read; "
                f"first problem: {self._name(first)}: {reason}",
                "check the files are complete, real images (open one in a viewer), or point at another folder",
            )

    def _emit(self, batch: list[torch.Tensor], done: int) -> torch.Tensor:
        self.used += len(batch)
        if self.progress is not None:
            self.progress(done)
        return torch.stack(batch)

    def _name(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def skipped_warning(self) -> str | None:
        """One line naming the skipped files (the first few) and their count, or None."""
        if not self.skipped:
            return None
        named = [f"{self._name(p)} ({reason})" for p, reason in self.skipped[:_MAX_NAMED_SKIPS]]
        more = len(self.skipped) - len(named)
        tail = f" and {more} more" if more else ""
        return (
            f"skipped {len(self.skipped)} of {len(self.paths)} calibration images that could not be read: "
            f"{', '.join(named)}{tail}"
        )


def _seeded_subset(paths: list[Path], root: Path, num: int, seed: int) -> list[Path]:
    def key(p: Path) -> tuple[bytes, str]:
        rel = p.relative_to(root).as_posix()
        return hashlib.blake2b(f"{seed}\0{rel}".encode(), digest_size=8).digest(), rel

    return sorted(paths, key=key)[:num]


__all__ = ["IMAGE_EXTENSIONS", "CalibrationImages", "ImageFolder", "decode_image", "find_images"]
