"""Read and write IDX files (the MNIST file format), gzipped or not.

Header: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then one
big-endian uint32 per dimension. Anything else is refused with an error naming the file.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

UINT8 = 0x08


class IdxError(ValueError):
    """A malformed IDX file; the message names the file."""


def parse_header(data: bytes, name: str = "<bytes>") -> tuple[tuple[int, ...], int]:
    """(shape, header length) from the first bytes of an IDX file (at least 20 suffice)."""
    if len(data) < 4:
        raise IdxError(f"{name}: {len(data)} bytes, too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise IdxError(f"{name}: bad magic {data[:4].hex()} (IDX files start with 0000)")
    if data[2] != UINT8:
        raise IdxError(f"{name}: element type 0x{data[2]:02x}, only uint8 (0x08) is supported")
    ndim = data[3]
    if not 1 <= ndim <= 4:
        raise IdxError(f"{name}: {ndim} dimensions in the header, expected 1 to 4")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IdxError(f"{name}: truncated header ({len(data)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    return shape, header_len


def check_header(head: bytes, size: int, name: str = "<bytes>") -> tuple[int, ...]:
    """The shape in the header ``head`` (the first 20 bytes suffice) of an IDX file of ``size``
    bytes; raise IdxError when the data does not fill exactly that shape."""
    shape, header_len = parse_header(head, name)
    expected, got = int(np.prod(shape, dtype=np.int64)), size - header_len
    if got != expected:
        raise IdxError(
            f"{name}: header says shape {shape} ({expected} bytes of data), file has {got}"
        )
    return shape


ROLES = {"images": (3, 2051), "labels": (1, 2049)}  # role -> (dimensions, magic number)


def role_of(name: str) -> str | None:
    """``images`` or ``labels`` from an MNIST file name (``train-images-idx3-ubyte``)."""
    return next((role for role in ROLES if f"-{role}-" in Path(name).name), None)


def check_role(head: bytes, name: str, source: str = "") -> None:
    """Refuse an IDX file whose header does not fit the role its name gives (images: magic
    2051, 3 dimensions; labels: magic 2049, 1 dimension), e.g. swapped images and labels."""
    role = role_of(name)
    if role is None or len(head) < 4:
        return  # a header too short is check_header's to name
    ndim, magic = ROLES[role]
    got = int.from_bytes(head[:4], "big")
    if got != magic:
        other = next((r for r, (_, m) in ROLES.items() if m == got), None)
        what = f"holds {other} (magic {got})" if other else f"has magic {got}"
        raise IdxError(
            f"{source or name}: {name} should hold {role} (IDX magic {magic}, {ndim}-d), "
            f"but {what}: swapped or misnamed files?"
        )


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a uint8 array of the header's shape."""
    shape = check_header(data, len(data), name)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(shape)).reshape(shape)


def check_idx_file(path: Path) -> tuple[int, ...]:
    """Check an uncompressed IDX file's header against its size without reading the data."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(4 + 4 * 4)
    return check_header(head, path.stat().st_size, str(path))


def read_bytes(path: Path) -> bytes:
    """The uncompressed bytes of an IDX file, ``.gz`` or not (detected by its magic)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise IdxError(f"{path}: corrupt gzip stream: {exc}") from None
    return raw


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a uint8 array."""
    return parse_idx(read_bytes(path), str(path))


def idx_header(shape: tuple[int, ...]) -> bytes:
    """The IDX header of a uint8 array of ``shape``."""
    return bytes([0, 0, UINT8, len(shape)]) + np.asarray(shape, dtype=">u4").tobytes()


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes of a uint8 array."""
    if array.dtype != np.uint8:
        raise TypeError(f"IDX writer takes uint8, got {array.dtype}")
    return idx_header(array.shape) + np.ascontiguousarray(array).tobytes()
