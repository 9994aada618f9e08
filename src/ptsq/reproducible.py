"""Make PyTorch zip archives (torch.save, torch.jit.save) byte-identical for identical content.

PyTorch's archive writer adds a record ``<archive>/.data/serialization_id`` whose value mixes a
checksum of the content with a random number, so saving the same model twice gives two different
files. :func:`pin_serialization_id` replaces that value, in place and at the same length, with
digits derived from a hash of the rest of the archive and fixes the record's CRC-32 in the local
header and the central directory. Nothing else moves, so PyTorch's 64-byte record alignment holds.

Serialise to memory (``io.BytesIO``) rather than to a path: the archive's folder name is then
always ``archive`` instead of the file's name, and a full disk raises ``OSError`` from Python's
write instead of aborting the process in PyTorch's C++ writer.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zipfile
import zlib

_RECORD = ".data/serialization_id"
_LOCAL_SIG = b"PK\x03\x04"
_CENTRAL_SIG = b"PK\x01\x02"


def pin_serialization_id(data: bytes) -> bytes:
    """``data`` with its serialization id replaced by a content hash; unchanged if it has none.

    Not a zip, no such record, or a compressed record: returned as is (best effort, never raises
    on malformed input; the caller writes what PyTorch produced).
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        info = next((i for i in zf.infolist() if i.filename.endswith("/" + _RECORD) or i.filename == _RECORD), None)
        start_dir = zf.start_dir
    except (zipfile.BadZipFile, OSError, ValueError):
        return data
    if info is None or info.compress_type != zipfile.ZIP_STORED or info.file_size == 0:
        return data
    off = info.header_offset
    if data[off : off + 4] != _LOCAL_SIG:
        return data
    name_len, extra_len = struct.unpack_from("<HH", data, off + 26)
    start = off + 30 + name_len + extra_len
    end = start + info.file_size
    if end > len(data):
        return data

    out = bytearray(data)
    out[start:end] = b"0" * info.file_size
    digits = str(int.from_bytes(hashlib.sha256(bytes(out)).digest(), "big"))
    value = (digits * (info.file_size // len(digits) + 1))[: info.file_size].encode()
    out[start:end] = value
    crc = zlib.crc32(value) & 0xFFFFFFFF
    struct.pack_into("<I", out, off + 14, crc)
    if info.flag_bits & 0x08:  # a data descriptor after the record repeats the CRC
        desc = end + 4 if out[end : end + 4] == b"PK\x07\x08" else end
        struct.pack_into("<I", out, desc, crc)

    # the matching central-directory entry carries the CRC too
    pos = start_dir
    name = info.filename.encode()
    while out[pos : pos + 4] == _CENTRAL_SIG:
        n, m, k = struct.unpack_from("<HHH", out, pos + 28)
        if bytes(out[pos + 46 : pos + 46 + n]) == name:
            struct.pack_into("<I", out, pos + 16, crc)
            return bytes(out)
        pos += 46 + n + m + k
    return data  # central entry not found: leave the archive as PyTorch wrote it


__all__ = ["pin_serialization_id"]
