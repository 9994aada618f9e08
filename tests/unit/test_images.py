"""Decoding, finding and batching real image files written with Pillow into tmp_path."""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from ptsq.data import CalibrationImages, ImageFolder, Preprocess, decode_image, find_images, preset
from ptsq.errors import ConfigError, DataError, ImageDecodeError

# Any warning fails a test here, so an unclosed file (ResourceWarning) in the decoder is caught too.
pytestmark = pytest.mark.filterwarnings("error")

# Identity normalisation: output equals the 0..255 pixel value, which makes expectations readable.
RAW = dict(scale=1.0, mean=(0.0,), std=(1.0,), crop_pct=1.0)


def raw(size: int | tuple[int, int] = 8, channels: str = "rgb") -> Preprocess:
    hw = (size, size) if isinstance(size, int) else size
    return Preprocess(size=hw, channels=channels, **RAW)


def solid(path: Path, colour: tuple[int, ...] | int, size=(12, 10), mode="RGB", **save) -> Path:
    Image.new(mode, size, colour).save(path, **save)
    return path


def channel_values(t: torch.Tensor) -> list[float]:
    """Per-channel value of a (nearly) uniform tensor, asserting it is uniform."""
    flat = t.reshape(t.shape[0], -1)
    assert (flat.max(1).values - flat.min(1).values).max() <= 2.0, "expected a uniform image"
    return flat.mean(1).tolist()


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, raw_rows: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw_rows)) + chunk(b"IEND", b"")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# --------------------------------------------------------------------------- decode: colour


@pytest.mark.parametrize("ext,tol", [(".png", 0.0), (".bmp", 0.0), (".webp", 3.0), (".jpg", 3.0), (".jpeg", 3.0)])
def test_solid_rgb_decodes_to_expected_normalised_values(tmp_path, ext, tol):
    path = solid(tmp_path / f"a{ext}", (200, 100, 50), **({"lossless": True} if ext == ".webp" else {}))
    pre = preset("imagenet", size=(16, 16))
    t = decode_image(path, pre)
    assert t.shape == (3, 16, 16) and t.dtype == torch.float32
    expected = torch.tensor([(v / 255 - m) / s for v, m, s in zip((200, 100, 50), pre.mean, pre.std)])
    # tol is in pixel units; convert to normalised units per channel.
    atol = torch.tensor([tol / 255 / s for s in pre.std]) + 1e-6
    diff = (t - expected[:, None, None]).abs().amax(dim=(1, 2))
    assert (diff <= atol).all(), (diff, atol)


def test_png_is_exact_under_minus1to1_preset(tmp_path):
    path = solid(tmp_path / "a.png", (255, 0, 127))
    t = decode_image(path, preset("minus1to1", size=(4, 6)))
    assert t.shape == (3, 4, 6)
    assert torch.equal(t[:, 0, 0], torch.tensor([1.0, -1.0, (127 - 127.5) / 127.5]))
    assert torch.equal(t, t[:, :1, :1].expand_as(t))


def test_grayscale_image_becomes_three_equal_channels(tmp_path):
    path = solid(tmp_path / "g.png", 90, mode="L")
    t = decode_image(path, raw())
    assert t.shape == (3, 8, 8)
    assert torch.equal(t[0], t[1]) and torch.equal(t[1], t[2])
    assert t[0, 0, 0].item() == 90.0


def test_rgba_is_composited_onto_black(tmp_path):
    img = Image.new("RGBA", (8, 8), (200, 100, 50, 255))
    img.paste((255, 255, 255, 0), (0, 0, 8, 4))  # top half fully transparent white
    img.save(tmp_path / "a.png")
    t = decode_image(tmp_path / "a.png", raw())
    assert torch.equal(t[:, :4], torch.zeros(3, 4, 8))  # transparent -> black, not white
    assert t[:, 4:].reshape(3, -1)[:, 0].tolist() == [200.0, 100.0, 50.0]

    half = solid(tmp_path / "h.png", (200, 100, 50, 128), mode="RGBA")
    vals = channel_values(decode_image(half, raw()))
    assert vals == pytest.approx([200 * 128 / 255, 100 * 128 / 255, 50 * 128 / 255], abs=1.0)


def test_la_and_palette_with_transparency(tmp_path):
    solid(tmp_path / "la.png", (200, 0), mode="LA")
    assert channel_values(decode_image(tmp_path / "la.png", raw())) == [0.0, 0.0, 0.0]

    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    pal.save(tmp_path / "p.png", transparency=0)  # index 0 transparent; pixels use index 1
    assert channel_values(decode_image(tmp_path / "p.png", raw())) == [40.0, 50.0, 60.0]
    pal.save(tmp_path / "pt.png", transparency=1)
    assert channel_values(decode_image(tmp_path / "pt.png", raw())) == [0.0, 0.0, 0.0]


def test_palette_and_cmyk_convert_to_rgb(tmp_path):
    pal = Image.new("P", (8, 8), 2)
    pal.putpalette([0, 0, 0, 0, 0, 0, 12, 34, 56] + [0] * 759)
    pal.save(tmp_path / "p.bmp")
    assert channel_values(decode_image(tmp_path / "p.bmp", raw())) == [12.0, 34.0, 56.0]

    solid(tmp_path / "c.jpg", (255, 0, 0, 0), mode="CMYK", quality=95)  # pure cyan ink: no red
    r, g, b = channel_values(decode_image(tmp_path / "c.jpg", raw()))
    assert r < 10 and g > 245 and b > 245


def test_bgr_reverses_channels_and_applies_mean_in_output_order(tmp_path):
    path = solid(tmp_path / "a.png", (200, 100, 50))
    rgb = decode_image(path, raw())
    bgr = decode_image(path, raw(channels="bgr"))
    assert torch.equal(bgr, rgb.flip(0))
    caffe = Preprocess(size=(8, 8), crop_pct=1.0, scale=1.0, mean=(1.0, 2.0, 3.0), std=(1.0, 1.0, 1.0), channels="bgr")
    assert decode_image(path, caffe)[:, 0, 0].tolist() == [49.0, 98.0, 197.0]


def test_gray_channels_give_one_luminance_channel(tmp_path):
    path = solid(tmp_path / "a.png", (200, 100, 50))
    t = decode_image(path, raw(channels="gray"))
    assert t.shape == (1, 8, 8)
    luma = 0.299 * 200 + 0.587 * 100 + 0.114 * 50
    assert t[0, 0, 0].item() == pytest.approx(luma, abs=1.0)

    mnist = preset("mnist")
    t = decode_image(solid(tmp_path / "d.png", 255, mode="L", size=(40, 30)), mnist)
    assert t.shape == (1, 28, 28)
    assert t[0, 0, 0].item() == pytest.approx((1.0 - 0.1307) / 0.3081, abs=1e-5)


# --------------------------------------------------------------------------- decode: depth, float, EXIF


def test_16bit_png_is_scaled_by_bit_depth_not_clipped(tmp_path):
    arr = np.full((10, 12), 65535, dtype=np.uint16)
    arr[:, 6:] = 32768
    arr[:5, :] = 4096  # 4096/257 ~ 15.9; a clipping conversion would give 255 for all of these
    Image.fromarray(arr).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as img:
        assert img.mode.startswith("I")
    t = decode_image(tmp_path / "d.png", Preprocess(size=(10, 12), crop_pct=1.0, scale=1.0, mean=(0,), std=(1,)))
    assert t.shape == (3, 10, 12)
    assert t[0, 9, 0].item() == pytest.approx(255.0, abs=1e-3)
    assert t[0, 9, 11].item() == pytest.approx(32768 / 257, abs=1e-3)
    assert t[0, 0, 0].item() == pytest.approx(4096 / 257, abs=1e-3)
    assert torch.equal(t[0], t[2])


def test_16bit_big_endian_and_16bit_rgb(tmp_path):
    big = Image.frombytes("I;16B", (4, 4), struct.pack(">H", 32768) * 16)
    big.save(tmp_path / "b.png")
    assert channel_values(decode_image(tmp_path / "b.png", raw(4, "gray"))) == pytest.approx([32768 / 257], abs=1e-3)

    rows = b"".join(b"\x00" + struct.pack(">HHH", 65535, 32768, 0) * 4 for _ in range(4))
    (tmp_path / "rgb16.png").write_bytes(png_bytes(4, 4, 16, 2, rows))
    assert channel_values(decode_image(tmp_path / "rgb16.png", raw(4))) == pytest.approx([255, 128, 0], abs=1.0)


def test_float_and_int32_images(tmp_path):
    Image.new("F", (6, 6), 0.5).save(tmp_path / "f.tif")
    assert channel_values(decode_image(tmp_path / "f.tif", raw(6))) == pytest.approx([127.5] * 3)
    Image.new("F", (6, 6), 300.0).save(tmp_path / "big.tif")  # out of 0..255: clipped
    assert channel_values(decode_image(tmp_path / "big.tif", raw(6))) == pytest.approx([255.0] * 3)
    Image.new("I", (6, 6), 65535).save(tmp_path / "i.tif")
    assert channel_values(decode_image(tmp_path / "i.tif", raw(6, "gray"))) == pytest.approx([255.0])


def test_nan_float_image_is_rejected(tmp_path):
    Image.new("F", (6, 6), float("nan")).save(tmp_path / "n.tif")
    with pytest.raises(ImageDecodeError, match="non-finite"):
        decode_image(tmp_path / "n.tif", raw(6))


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))  # stored: left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: red on top, blue below
    img.save(tmp_path / "o.jpg", exif=exif, quality=95)
    t = decode_image(tmp_path / "o.jpg", raw((40, 20)))
    assert t.shape == (3, 40, 20)
    top, bottom = t[:, 5, 10].tolist(), t[:, 35, 10].tolist()
    assert top[0] > 200 and top[2] < 50, top
    assert bottom[2] > 200 and bottom[0] < 50, bottom


# --------------------------------------------------------------------------- decode: geometry


def test_centre_crop_of_non_square_image_without_resize(tmp_path):
    # 60x40 with crop_pct 0.5 and size 20: resize target 40 is already covered -> crop the centre.
    img = Image.new("RGB", (60, 40), (255, 0, 0))
    img.paste((0, 255, 0), (20, 10, 40, 30))  # exactly the region that must survive
    img.putpixel((30, 20), (0, 0, 255))  # marked centre
    img.save(tmp_path / "c.png")
    t = decode_image(tmp_path / "c.png", Preprocess(size=(20, 20), crop_pct=0.5, scale=1.0, mean=(0,), std=(1,)))
    assert t.shape == (3, 20, 20)
    assert t[0].max().item() == 0.0  # no red border leaked in
    assert t[:, 10, 10].tolist() == [0.0, 0.0, 255.0]  # centre marker lands at the centre
    assert (t[1] == 255).sum().item() == 399


@pytest.mark.parametrize("size,hw", [((120, 80), (20, 20)), ((80, 120), (20, 20)), ((120, 80), (16, 24))])
def test_resize_covers_then_crops_centre(tmp_path, size, hw):
    w, h = size
    img = Image.new("RGB", size, (255, 0, 0))
    rh, rw = round(hw[0] / 0.5), round(hw[1] / 0.5)
    s = max(rh / h, rw / w)
    # Paint green exactly the source region that maps onto the crop, plus a 2-pixel margin.
    cw, ch = hw[1] / s, hw[0] / s
    box = (round((w - cw) / 2) - 2, round((h - ch) / 2) - 2, round((w + cw) / 2) + 2, round((h + ch) / 2) + 2)
    img.paste((0, 255, 0), box)
    img.save(tmp_path / "r.png")
    pre = Preprocess(size=hw, crop_pct=0.5, scale=1.0, mean=(0,), std=(1,))
    t = decode_image(tmp_path / "r.png", pre)
    assert t.shape == (3, *hw)
    assert t[0].max().item() <= 2.0 and t[1].min().item() >= 253.0


def test_upscales_small_images_to_cover(tmp_path):
    path = solid(tmp_path / "tiny.png", (10, 20, 30), size=(3, 2))
    t = decode_image(path, preset("imagenet", size=(32, 48)))
    assert t.shape == (3, 32, 48)
    assert torch.isfinite(t).all()


# --------------------------------------------------------------------------- decode: bad files


def real_jpeg(path: Path) -> bytes:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, quality=95)
    return path.read_bytes()


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("zero.jpg", b"", "zero-byte file"),
        ("text.jpg", b"hello, this is not a picture\n", r"not an image \(content is text\)"),
        ("page.png", b"<!DOCTYPE html><html><body>404</body></html>", r"not an image \(content is HTML\)"),
        ("lfs.png", b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\n", "Git LFS pointer"),
        ("noise.jpg", bytes(range(256)) * 4, r"not an image \(content is unrecognised binary data\)"),
        ("badpng.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "cannot read image"),
    ],
)
def test_unreadable_files_raise_decode_error_with_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=reason) as info:
        decode_image(path, raw())
    assert str(path) in info.value.message and "\n" not in info.value.message
    assert info.value.hint


def test_truncated_jpeg_png_webp(tmp_path):
    data = real_jpeg(tmp_path / "full.jpg")
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    rng = np.random.default_rng(1)
    noise = Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
    for ext in ("png", "webp"):
        noise.save(tmp_path / f"full.{ext}")
        full = (tmp_path / f"full.{ext}").read_bytes()
        (tmp_path / f"half.{ext}").write_bytes(full[: len(full) // 2])
    for ext in ("jpg", "png", "webp"):
        with pytest.raises(ImageDecodeError, match="truncated image"):
            decode_image(tmp_path / f"half.{ext}", raw())


def test_truncated_is_detected_even_if_someone_set_load_truncated_images(tmp_path, monkeypatch):
    data = real_jpeg(tmp_path / "full.jpg")
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageDecodeError, match="truncated image"):
        decode_image(tmp_path / "half.jpg", raw())
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_corrupt_jpeg_body(tmp_path):
    data = bytearray(real_jpeg(tmp_path / "full.jpg"))
    data[200:] = b"\xff\xd9" + bytes(len(data) - 202)  # end-of-image marker inside the scan
    (tmp_path / "bad.jpg").write_bytes(bytes(data))
    with pytest.raises(ImageDecodeError, match="cannot read image"):
        decode_image(tmp_path / "bad.jpg", raw())


@pytest.mark.parametrize("side", [12, 20])  # 144 px trips Pillow's warning, 400 px its error
def test_decompression_bomb_is_refused(tmp_path, monkeypatch, side):
    path = solid(tmp_path / "bomb.png", (1, 2, 3), size=(side, side))
    filters_before = list(warnings.filters)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(ImageDecodeError, match="image too large"):
            decode_image(path, raw())
    assert seen == []  # Pillow's warning became the error instead of leaking out
    assert warnings.filters == filters_before


def test_huge_header_is_refused_before_decoding(tmp_path, monkeypatch):
    # A 70 000 x 70 000 RGB image claimed by a header with no pixel data behind it.
    (tmp_path / "huge.png").write_bytes(png_bytes(70_000, 70_000, 8, 2, b""))
    with pytest.raises(ImageDecodeError, match="image too large"):
        decode_image(tmp_path / "huge.png", raw())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # Pillow's guard off: ours still holds
    with pytest.raises(ImageDecodeError, match=r"image too large: 70000 x 70000 pixels"):
        decode_image(tmp_path / "huge.png", raw())


def test_no_file_handles_leak(tmp_path, monkeypatch):
    real_jpeg(tmp_path / "ok.jpg")
    (tmp_path / "z.jpg").write_bytes(b"")
    (tmp_path / "t.jpg").write_bytes(b"text")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "h.jpg").write_bytes(data[:300])
    (tmp_path / "huge.png").write_bytes(png_bytes(70_000, 70_000, 8, 2, b""))
    solid(tmp_path / "bomb.png", 0, size=(12, 12))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    before = open_fds()
    for name in ("ok.jpg", "z.jpg", "t.jpg", "h.jpg", "huge.png", "bomb.png"):
        try:
            decode_image(tmp_path / name, raw())
        except ImageDecodeError:
            pass
    assert open_fds() == before


# --------------------------------------------------------------------------- find_images


def test_find_images_recursive_sorted_case_insensitive_skips_hidden(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / ".cache").mkdir()
    for rel in ("z.PNG", "b/x.jpeg", "a/deep/y.WebP", "a/c.bmp", ".hidden.jpg", ".cache/in_hidden.jpg", "notes.txt"):
        (tmp_path / rel).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a/c.bmp", "a/deep/y.WebP", "b/x.jpeg", "z.PNG"]


def test_find_images_survives_symlink_loops(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(b"x")
    os.symlink(tmp_path, tmp_path / "sub" / "loop")
    assert [p.name for p in find_images(tmp_path)] == ["a.png"]


def test_find_images_errors_are_one_line_with_hints(tmp_path):
    with pytest.raises(DataError, match=r"calibration folder '.*nope' does not exist") as info:
        find_images(tmp_path / "nope")
    assert info.value.hint and "\n" not in info.value.message

    (tmp_path / "f.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        find_images(tmp_path / "f.jpg")

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no image files.*the folder is empty"):
        find_images(tmp_path / "empty")

    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("a.txt", "b.txt", "c.tif"):
        (docs / name).write_bytes(b"x")
    with pytest.raises(DataError, match=r"\.jpg, \.jpeg, \.png, \.bmp, \.webp; found 3 other file\(s\): \.txt, \.tif"):
        find_images(docs)


def test_find_images_max_images_guard(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.png").write_bytes(b"x")
    assert len(find_images(tmp_path, max_images=5)) == 5
    with pytest.raises(DataError, match="more than 4 images") as info:
        find_images(tmp_path, max_images=4)
    assert "--max-images" in info.value.hint
    with pytest.raises(ConfigError):
        find_images(tmp_path, max_images=0)


# --------------------------------------------------------------------------- ImageFolder


def test_image_folder_dataset(tmp_path):
    for i in range(3):
        solid(tmp_path / f"{i}.png", (i * 10, 0, 0))
    (tmp_path / "bad.png").write_bytes(b"")
    ds = ImageFolder(tmp_path, raw())
    assert len(ds) == 4 and [p.name for p in ds.paths] == ["0.png", "1.png", "2.png", "bad.png"]
    assert ds[2][0, 0, 0].item() == 20.0
    with pytest.raises(ImageDecodeError, match="zero-byte"):
        ds[3]
    loader = torch.utils.data.DataLoader(ImageFolder(ds.paths[:3], raw()), batch_size=2)
    assert [b.shape for b in loader] == [(2, 3, 8, 8), (1, 3, 8, 8)]
    with pytest.raises(DataError, match="image folder"):
        ImageFolder(tmp_path / "missing", raw())


# --------------------------------------------------------------------------- CalibrationImages


def numbered_folder(root: Path, n: int) -> Path:
    """n solid images whose red value identifies them: image i has red = i."""
    root.mkdir(exist_ok=True)
    for i in range(n):
        solid(root / f"img{i:03d}.png", (i, 0, 0), size=(6, 5))
    return root


def ids(batches: list[torch.Tensor]) -> list[int]:
    return [int(v) for b in batches for v in b[:, 0, 0, 0].tolist()]


def test_calibration_batches_shapes_len_summary(tmp_path):
    root = numbered_folder(tmp_path / "d", 10)
    calib = CalibrationImages(root, raw(4), num=7, batch_size=3, seed=1)
    batches = list(calib)
    assert [tuple(b.shape) for b in batches] == [(3, 3, 4, 4), (3, 3, 4, 4), (1, 3, 4, 4)]
    assert len(calib) == 3 and calib.used == 7 and calib.skipped == []
    assert len(set(ids(batches))) == 7
    assert calib.summary() == {
        "source": str(root),
        "requested": 7,
        "found": 10,
        "used": 7,
        "skipped": 0,
        "seed": 1,
        "batch_size": 3,
    }
    assert calib.skipped_warning() is None


def test_calibration_subset_is_seeded_and_reiterable(tmp_path):
    root = numbered_folder(tmp_path / "d", 20)
    a = CalibrationImages(root, raw(4), num=6, batch_size=4, seed=0)
    b = CalibrationImages(root, raw(4), num=6, batch_size=4, seed=0)
    c = CalibrationImages(root, raw(4), num=6, batch_size=4, seed=1)
    first, again = list(a), list(a)
    assert len(first) == len(again) == 2
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert ids(first) == ids(list(b)) == [int(p.stem[3:]) for p in a.paths]
    assert set(ids(first)) != set(ids(list(c)))
    listing = find_images(root)
    for calib in (a, c):  # a random pick in a shuffled order, not the head of the listing
        assert calib.paths != listing[:6] and calib.paths != sorted(calib.paths)


def test_calibration_subset_does_not_depend_on_creation_order(tmp_path):
    names = [f"n{i}.png" for i in range(12)]
    for folder, order in (("x", names), ("y", names[::-1])):
        (tmp_path / folder).mkdir()
        for name in order:
            solid(tmp_path / folder / name, (1, 2, 3), size=(2, 2))
    picks = [[p.name for p in CalibrationImages(tmp_path / f, raw(2), num=5).paths] for f in ("x", "y")]
    assert picks[0] == picks[1]


def test_calibration_takes_all_when_fewer_than_num(tmp_path):
    root = numbered_folder(tmp_path / "d", 5)
    calib = CalibrationImages(root, raw(4), num=300, batch_size=32)
    assert len(calib) == 1 and sorted(ids(list(calib))) == [0, 1, 2, 3, 4]


def test_calibration_skips_and_reports_bad_files(tmp_path):
    root = numbered_folder(tmp_path / "d", 4)
    (root / "a_empty.jpg").write_bytes(b"")
    (root / "b_text.png").write_text("not an image")
    data = real_jpeg(tmp_path / "full.jpg")
    (root / "c_half.jpg").write_bytes(data[: len(data) // 2])
    seen: list[int] = []
    calib = CalibrationImages(root, raw(4), num=50, batch_size=2, progress=seen.append)
    batches = list(calib)
    assert sum(len(b) for b in batches) == 4 == calib.used
    assert sorted(ids(batches)) == [0, 1, 2, 3]
    assert sorted((p.name, r) for p, r in calib.skipped) == [
        ("a_empty.jpg", "zero-byte file"),
        ("b_text.png", "not an image (content is text)"),
        ("c_half.jpg", "truncated image"),
    ]
    assert seen == sorted(seen) and seen[-1] == 7
    assert calib.summary()["skipped"] == 3 and calib.summary()["used"] == 4
    warning = calib.skipped_warning()
    assert warning is not None and "\n" not in warning
    assert warning.startswith("skipped 3 of 7") and "a_empty.jpg (zero-byte file)" in warning
    list(calib)  # re-running does not double-count
    assert len(calib.skipped) == 3 and calib.used == 4


def test_skipped_warning_names_first_five_and_counts_the_rest(tmp_path):
    root = numbered_folder(tmp_path / "d", 1)
    for i in range(8):
        (root / f"bad{i}.jpg").write_bytes(b"")
    calib = CalibrationImages(root, raw(4), num=100)
    list(calib)
    warning = calib.skipped_warning()
    assert warning is not None and "skipped 8 of 9" in warning and warning.endswith("and 3 more")
    assert warning.count("zero-byte file") == 5


def test_all_bad_folder_raises_data_error(tmp_path):
    for name in ("a.jpg", "b.png", "c.webp"):
        (tmp_path / name).write_bytes(b"")
    calib = CalibrationImages(tmp_path, raw(4), num=10)
    with pytest.raises(DataError, match=r"none of the 3 images in '.*' could be read; first problem: .*: zero-byte"):
        list(calib)


def test_calibration_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        CalibrationImages(tmp_path / "missing", raw(4))
    with pytest.raises(DataError, match="no image files"):
        CalibrationImages(tmp_path, raw(4))
    numbered_folder(tmp_path, 3)
    with pytest.raises(DataError, match="more than 2 images"):
        CalibrationImages(tmp_path, raw(4), max_images=2)
    for bad in (dict(num=0), dict(batch_size=0), dict(num=2.5), dict(seed="x")):
        with pytest.raises(ConfigError):
            CalibrationImages(tmp_path, raw(4), **bad)


def test_mixed_sizes_and_modes_batch_together(tmp_path):
    solid(tmp_path / "rgb.jpg", (10, 20, 30), size=(50, 30))
    solid(tmp_path / "gray.png", 77, mode="L", size=(13, 31))
    solid(tmp_path / "rgba.png", (1, 2, 3, 100), mode="RGBA", size=(9, 9))
    solid(tmp_path / "pal.png", 3, mode="P", size=(20, 7))
    solid(tmp_path / "cmyk.jpg", (10, 20, 30, 40), mode="CMYK", size=(16, 16))
    solid(tmp_path / "bin.bmp", 1, mode="1", size=(11, 5))
    solid(tmp_path / "pic.webp", (5, 6, 7), size=(64, 8))
    Image.fromarray(np.full((7, 7), 1000, dtype=np.uint16)).save(tmp_path / "deep.png")
    pre = preset("imagenet", size=(24, 32))
    calib = CalibrationImages(tmp_path, pre, num=100, batch_size=8)
    (batch,) = list(calib)
    assert batch.shape == (8, 3, 24, 32) and batch.dtype == torch.float32
    assert torch.isfinite(batch).all() and calib.used == 8 and not calib.skipped
    gray = list(CalibrationImages(tmp_path, raw((5, 5), "gray"), num=100, batch_size=3))
    assert [tuple(b.shape) for b in gray] == [(3, 1, 5, 5), (3, 1, 5, 5), (2, 1, 5, 5)]
