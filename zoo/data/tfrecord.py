"""TFRecord files of tf.train.Example protos, read without TensorFlow (the preprocessed datasets some official code
releases ship, e.g. NASA's AMASS frames).

A TFRecord file is a sequence of records: an 8-byte little-endian length, a 4-byte masked CRC-32C of those 8 bytes,
the data, and a 4-byte masked CRC-32C of the data. `index_records` walks the headers only (checking each length's
CRC, so a truncated or misframed file is refused at once) and `read_record` fetches one record by its offset, with
the data's CRC checked only when asked (pure Python: about a second per megabyte). `parse_example` decodes the
Example protobuf's features map: float and int64 lists as numpy arrays, bytes lists as lists of bytes.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord framing uses it."""
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def index_records(path: str | Path) -> list[tuple[int, int]]:
    """(offset of the data, length) of every record in the file; a ValueError naming the file on bad framing."""
    path = Path(path)
    out = []
    size = path.stat().st_size
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            head = f.read(12)
            if len(head) < 12:
                raise ValueError(f"{path}: truncated record header at byte {pos}")
            (length,), (crc,) = struct.unpack("<Q", head[:8]), struct.unpack("<I", head[8:])
            if masked_crc(head[:8]) != crc:
                raise ValueError(f"{path}: bad length checksum at byte {pos}; not a TFRecord file, or corrupted")
            if pos + 12 + length + 4 > size:
                raise ValueError(f"{path}: the record at byte {pos} runs past the end of the file (truncated?)")
            out.append((pos + 12, length))
            pos += 12 + length + 4
            f.seek(pos)
    return out


def read_record(path: str | Path, offset: int, length: int, verify: bool = False) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length + 4)
    if verify and masked_crc(data[:length]) != struct.unpack("<I", data[length:])[0]:
        raise ValueError(f"{path}: the record at byte {offset - 12} fails its data checksum (corrupted)")
    return data[:length]


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of a protobuf message: length-delimited values as bytes."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _feature(buf: bytes):
    for field, _, value in _fields(buf):  # oneof: 1 bytes_list, 2 float_list, 3 int64_list
        inner = list(_fields(value))
        if field == 1:
            return [v for _, _, v in inner]
        if field == 2:
            parts = [np.frombuffer(v, "<f4") if w == 2 else np.frombuffer(v, "<f4") for _, w, v in inner]
            return np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if field == 3:
            vals: list[int] = []
            for _, w, v in inner:
                if w == 2:  # packed varints
                    j = 0
                    while j < len(v):
                        x, j = _varint(v, j)
                        vals.append(x - (1 << 64) if x >= 1 << 63 else x)
                else:
                    vals.append(v - (1 << 64) if v >= 1 << 63 else v)
            return np.array(vals, dtype=np.int64)
    return []


def parse_example(buf: bytes) -> dict:
    """A tf.train.Example's features: name -> numpy array (floats, int64s) or list of bytes."""
    out = {}
    for field, _, features in _fields(buf):
        if field != 1:
            continue
        for f2, _, entry in _fields(features):
            if f2 != 1:
                continue
            key = value = None
            for f3, _, v in _fields(entry):
                if f3 == 1:
                    key = v.decode()
                elif f3 == 2:
                    value = _feature(v)
            if key is not None:
                out[key] = value
    return out
