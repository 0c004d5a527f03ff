"""IDX reader/writer and the atomic writer."""

from __future__ import annotations

import gzip
import stat

import numpy as np
import pytest

from pipeline.core.io import atomic_open, atomic_write
from pipeline.data.idx import (
    IdxError,
    check_header,
    check_idx_file,
    encode_idx,
    idx_header,
    parse_header,
    parse_idx,
    read_idx,
)


def test_round_trip_plain_and_gzip(tmp_path):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = encode_idx(x)
    assert data[:4] == b"\x00\x00\x08\x03"
    assert data[:16] == idx_header(x.shape)
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "a.gz").write_bytes(gzip.compress(data))
    for name in ("a", "a.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), x)
    assert check_idx_file(tmp_path / "a") == (2, 3, 4)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x00\x08\x01" + b"\x00" * 8, "bad magic"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00", "element type 0x0d"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x05" + b"\x00" * 20, "5 dimensions"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated header"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "shape (5,) (5 bytes of data), file has 3"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x02abc", "shape (2,) (2 bytes of data), file has 3"),
    ],
)
def test_malformed_header_is_refused_naming_the_file(data, message):
    with pytest.raises(IdxError, match=r"labels\.idx") as info:
        parse_idx(data, "labels.idx")
    assert message in str(info.value)


def test_check_header_reads_only_the_head():
    head = idx_header((60000, 28, 28))
    assert parse_header(head) == ((60000, 28, 28), 16)
    assert check_header(head, 16 + 60000 * 784) == (60000, 28, 28)
    with pytest.raises(IdxError, match="file has 47039999"):
        check_header(head, 16 + 60000 * 784 - 1, "train-images")


def test_check_idx_file_on_a_short_file(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(encode_idx(np.zeros((3, 2), np.uint8))[:-1])
    with pytest.raises(IdxError, match=str(path)):
        check_idx_file(path)


def test_atomic_open_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "out" / "f"
    atomic_write(path, b"old")
    with pytest.raises(RuntimeError), atomic_open(path) as f:
        f.write(b"half of the new")
        raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f"]


def test_atomic_write_replaces_with_a_readable_mode(tmp_path):
    path = tmp_path / "f"
    atomic_write(path, b"one")
    atomic_write(path, b"two")
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # not mkstemp's 0600
