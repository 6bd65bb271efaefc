"""File identity survives renames and notices truncation and rewritten content."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import pytest

from controller.logs.identity import grow_fingerprint, observe
from controller.logs.transition import FINGERPRINT_BYTES, FileIdentity, same_file

HEAD = b'{"msg": "first line"}\n' * 100  # longer than FINGERPRINT_BYTES


def identify(f: BinaryIO) -> FileIdentity:
    return observe(f).identity()


def still_same(known: FileIdentity, f: BinaryIO) -> bool:
    return same_file(known, observe(f))


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_identity_holds_device_inode_and_fingerprint_length(tmp_path: Path) -> None:
    path = write(tmp_path / "a.json", HEAD)
    with path.open("rb") as f:
        known = identify(f)
    st = path.stat()
    assert (known.device, known.inode) == (st.st_dev, st.st_ino)
    assert known.fingerprint_len == FINGERPRINT_BYTES
    assert len(known.fingerprint) == 32


def test_identify_leaves_the_file_position_alone(tmp_path: Path) -> None:
    with write(tmp_path / "a.json", HEAD).open("rb") as f:
        f.seek(17)
        identify(f)
        assert f.tell() == 17


def test_renamed_file_keeps_its_identity(tmp_path: Path) -> None:
    path = write(tmp_path / "a.json", HEAD)
    with path.open("rb") as f:
        known = identify(f)
    renamed = path.rename(tmp_path / "a.json.1")
    with renamed.open("rb") as f:
        assert still_same(known, f)
        assert identify(f) == known


def test_truncated_and_rewritten_file_is_not_the_same(tmp_path: Path) -> None:
    path = write(tmp_path / "a.json", HEAD)
    with path.open("rb") as f:
        known = identify(f)
    with path.open("r+b") as f:
        f.truncate(0)
        f.write(b'{"msg": "other"}\n' * 100)
    with path.open("rb") as f:
        assert os.fstat(f.fileno()).st_ino == known.inode
        assert not still_same(known, f)


def test_truncated_file_is_not_the_same_even_before_new_writes(tmp_path: Path) -> None:
    path = write(tmp_path / "a.json", HEAD)
    with path.open("rb") as f:
        known = identify(f)
    os.truncate(path, 0)
    with path.open("rb") as f:
        assert not still_same(known, f)


def test_same_inode_rewritten_with_the_same_first_bytes_is_the_same(tmp_path: Path) -> None:
    path = write(tmp_path / "a.json", HEAD)
    with path.open("rb") as f:
        known = identify(f)
    with path.open("r+b") as f:
        f.seek(FINGERPRINT_BYTES)
        f.write(b"different tail\n")
    with path.open("rb") as f:
        assert still_same(known, f)


def test_another_file_with_the_same_content_is_not_the_same(tmp_path: Path) -> None:
    with write(tmp_path / "a.json", HEAD).open("rb") as f:
        known = identify(f)
    with write(tmp_path / "b.json", HEAD).open("rb") as f:
        assert not still_same(known, f)


def test_short_fingerprint_grows_when_the_file_gets_longer(tmp_path: Path) -> None:
    path = write(tmp_path / "a.json", b'{"a": 1}\n')
    with path.open("rb") as f:
        short = identify(f)
    assert short.fingerprint_len == 8  # all but the last byte of a short file
    with path.open("ab") as f:
        f.write(HEAD)
    with path.open("rb") as f:
        assert still_same(short, f)
        grown = grow_fingerprint(short, f)
        assert grown == identify(f)
        assert grown.fingerprint_len == FINGERPRINT_BYTES
        assert grow_fingerprint(grown, f) == grown


def test_growing_the_fingerprint_of_a_rewritten_file_raises(tmp_path: Path) -> None:
    path = write(tmp_path / "a.json", b'{"a": 1}\n')
    with path.open("rb") as f:
        short = identify(f)
    with path.open("r+b") as f:
        f.write(b'{"b": 2}\n' + HEAD)
    with path.open("rb") as f, pytest.raises(ValueError):
        grow_fingerprint(short, f)


def test_empty_file_is_identified_and_then_grows(tmp_path: Path) -> None:
    path = write(tmp_path / "a.json", b"")
    with path.open("rb") as f:
        empty = identify(f)
    assert empty.fingerprint_len == 0
    with path.open("ab") as f:
        f.write(HEAD)
    with path.open("rb") as f:
        assert still_same(empty, f)
        assert grow_fingerprint(empty, f).fingerprint_len == FINGERPRINT_BYTES
