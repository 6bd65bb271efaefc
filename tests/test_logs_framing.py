"""Line framing over real files: complete lines only, bad lines counted, memory bounded."""

from __future__ import annotations

import os
import tracemalloc
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controller.api.entry import Entry
from controller.logs.framing import BadLine, CarryState, read_all, read_batch

MiB = 1 << 20


@dataclass
class Tail:
    """A reader that follows one growing file the way the LogFile reconciler will."""

    path: Path
    offset: int = 0
    carry: CarryState = CarryState.NONE
    entries: list[Entry] = field(default_factory=list)
    lines: int = 0
    bad: list[BadLine] = field(default_factory=list)
    kw: dict[str, Any] = field(default_factory=dict)

    def append(self, data: bytes) -> None:
        with self.path.open("ab") as f:
            f.write(data)

    def read(self) -> Tail:
        with self.path.open("rb") as f:
            for batch in read_all(f, self.offset, self.carry, **self.kw):
                assert batch.start_offset == self.offset
                self.offset, self.carry = batch.next_offset, batch.carry
                self.entries += batch.entries
                self.lines += batch.lines
                self.bad += batch.bad
        return self


def tail(tmp_path: Path, data: bytes = b"", **kw: Any) -> Tail:
    path = tmp_path / "log.json"
    path.write_bytes(data)
    return Tail(path, kw=kw)


def line(**fields: Any) -> bytes:
    return orjson.dumps(fields) + b"\n"


def test_every_sample_file_reads_whole_with_no_bad_lines(testdata: Path) -> None:
    samples = sorted(testdata.iterdir())
    assert samples
    for sample in samples:
        data = sample.read_bytes()
        with sample.open("rb") as f:
            batches = list(read_all(f, max_bytes=4096))
        assert [b.bad for b in batches if b.bad] == [], sample.name
        assert sum(b.lines for b in batches) == len(data.splitlines()), sample.name
        assert sum(len(b.entries) for b in batches) == len(data.splitlines()), sample.name
        assert batches[-1].next_offset == len(data), sample.name


def test_sample_without_final_newline_is_consumed_once_after_its_newline_arrives(
    testdata: Path, tmp_path: Path
) -> None:
    data = (testdata / "runme_traces_lines.jsonl").read_bytes()
    assert not data.endswith(b"\n")
    reader = tail(tmp_path, data).read()
    assert reader.lines == len(data.splitlines())
    assert reader.offset == len(data)
    assert reader.carry is CarryState.AFTER_UNTERMINATED
    assert reader.entries[-1].offset == data.rindex(b"\n") + 1

    before = reader.lines
    reader.append(b"\n" + line(msg="new", ts=1.5))
    reader.read()
    assert reader.lines == before + 1
    assert reader.entries[-1].message == "new"
    assert reader.bad == []
    assert reader.carry is CarryState.NONE


def test_partial_last_line_is_consumed_once_when_completed(tmp_path: Path) -> None:
    reader = tail(tmp_path, line(msg="a") + b'{"msg": "b", "ti').read()
    assert [e.message for e in reader.entries] == ["a"]
    assert reader.offset == len(line(msg="a"))

    assert reader.read().lines == 1  # no progress while it stays partial

    reader.append(b'me": 2}\n')
    reader.read().read()
    assert [e.message for e in reader.entries] == ["a", "b"]
    assert reader.lines == 2
    assert reader.offset == reader.path.stat().st_size


def test_entries_carry_their_line_offset_and_crc_of_the_line_without_ending(
    tmp_path: Path,
) -> None:
    first, second = b'{"msg":"a"}', b'{"msg":"b"}'
    reader = tail(tmp_path, first + b"\r\n" + second + b"\n").read()
    assert [(e.offset, e.digest) for e in reader.entries] == [
        (0, zlib.crc32(first)),
        (len(first) + 2, zlib.crc32(second)),
    ]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "invalid-json"),
        (b'{"a": 1', "invalid-json"),
        (b"[1, 2]", "not-an-object"),
        (b'"text"', "not-an-object"),
        (b'{"a": "\xff\xfe"}', "invalid-utf8"),
        (b'{"a": "x\x00y"}', "nul-bytes"),
        (b"", "empty"),
        (b" \t ", "empty"),
        (b"\r", "empty"),
    ],
)
def test_bad_line_is_counted_with_its_reason_and_skipped(
    tmp_path: Path, raw: bytes, reason: str
) -> None:
    good = line(msg="before")
    reader = tail(tmp_path, good + raw + b"\n" + line(msg="after")).read()
    assert reader.bad == [BadLine(len(good), reason)]
    assert [e.message for e in reader.entries] == ["before", "after"]
    assert reader.lines == 3


def test_line_longer_than_the_cap_is_skipped_and_reading_goes_on(tmp_path: Path) -> None:
    long_line = b'{"x": "' + b"y" * (20 * MiB) + b'"}\n'
    reader = tail(tmp_path, line(msg="a") + long_line + line(msg="b"))
    reader.kw = {"max_line_bytes": 16 * MiB}
    reader.read()
    assert reader.bad == [BadLine(len(line(msg="a")), "too-long")]
    assert [e.message for e in reader.entries] == ["a", "b"]
    assert reader.lines == 3


def test_overlong_line_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    long_line = b'{"x": "' + b"y" * (20 * MiB) + b'"}\n'
    reader = tail(tmp_path, long_line + line(msg="after"))
    reader.kw = {"max_line_bytes": MiB, "chunk_bytes": 64 << 10, "max_bytes": 256 << 10}
    tracemalloc.start()
    try:
        reader.read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reader.bad == [BadLine(0, "too-long")]
    assert [e.message for e in reader.entries] == ["after"]
    assert peak < 8 * MiB


def test_overlong_line_finished_in_a_later_call_is_counted_once(tmp_path: Path) -> None:
    reader = tail(tmp_path, line(msg="a") + b'{"x": "' + b"y" * 5000)
    reader.kw = {"max_line_bytes": 1000, "chunk_bytes": 256}
    reader.read()
    assert reader.carry is CarryState.IN_OVERLONG
    assert reader.offset == reader.path.stat().st_size
    assert reader.bad == [BadLine(len(line(msg="a")), "too-long")]

    reader.append(b"y" * 5000)
    reader.read()
    assert reader.carry is CarryState.IN_OVERLONG

    reader.append(b'"}\n' + line(msg="b"))
    reader.read()
    assert reader.carry is CarryState.NONE
    assert [e.message for e in reader.entries] == ["a", "b"]
    assert len(reader.bad) == 1
    assert reader.lines == 3


def test_line_of_exactly_the_cap_is_read(tmp_path: Path) -> None:
    exact = line(x="y" * 100)
    reader = tail(tmp_path, exact, max_line_bytes=len(exact) - 1).read()
    assert reader.bad == []
    assert len(reader.entries) == 1


def test_crlf_line_endings_are_stripped(tmp_path: Path) -> None:
    reader = tail(tmp_path, b'{"msg":"a"}\r\n{"msg":"b"}\r\n').read()
    assert [e.message for e in reader.entries] == ["a", "b"]
    assert reader.bad == []


def test_bom_at_file_start_is_ignored(tmp_path: Path) -> None:
    reader = tail(tmp_path, b"\xef\xbb\xbf" + line(msg="a") + line(msg="b")).read()
    assert [e.message for e in reader.entries] == ["a", "b"]
    assert reader.entries[0].digest == zlib.crc32(line(msg="a").rstrip(b"\n"))
    assert reader.bad == []


def test_batch_stops_after_max_bytes_but_always_holds_a_complete_line(tmp_path: Path) -> None:
    big = line(x="y" * 500)
    with (tmp_path / "log.json").open("wb+") as f:
        f.write(big + line(msg="a") * 10)
        f.flush()
        first = read_batch(f, 0, max_bytes=10)
        second = read_batch(f, first.next_offset, max_bytes=len(line(msg="a")) * 3)
    assert (first.lines, first.next_offset) == (1, len(big))
    assert second.lines == 3
    assert second.carry is CarryState.NONE


def test_batch_holds_a_line_even_after_swallowing_a_late_newline(tmp_path: Path) -> None:
    with (tmp_path / "log.json").open("wb+") as f:
        f.write(b'{"msg":"a"}\n' + line(msg="b"))
        f.flush()
        batch = read_batch(f, len(b'{"msg":"a"}'), CarryState.AFTER_UNTERMINATED, max_bytes=1)
    assert [e.message for e in batch.entries] == ["b"]
    assert batch.lines == 1


def test_nothing_new_returns_no_progress(tmp_path: Path) -> None:
    data = line(msg="a")
    with (tmp_path / "log.json").open("wb+") as f:
        f.write(data)
        f.flush()
        batch = read_batch(f, len(data))
    assert (batch.next_offset, batch.lines, batch.entries) == (len(data), 0, [])


def test_deleted_file_is_read_through_its_open_handle(tmp_path: Path) -> None:
    path = tmp_path / "log.json"
    path.write_bytes(line(msg="a") + line(msg="b"))
    with path.open("rb") as f:
        os.unlink(path)
        batches = list(read_all(f))
    assert [e.message for b in batches for e in b.entries] == ["a", "b"]


def test_carry_after_unterminated_resets_when_a_new_line_follows_directly(
    tmp_path: Path,
) -> None:
    reader = tail(tmp_path, b'{"msg":"a"}').read()
    reader.append(b'{"msg":"b"}\n')
    reader.read()
    assert [e.message for e in reader.entries] == ["a", "b"]
    assert reader.carry is CarryState.NONE


def test_late_crlf_after_unterminated_object_is_swallowed_in_two_steps(tmp_path: Path) -> None:
    reader = tail(tmp_path, b'{"msg":"a"}').read()
    reader.append(b"\r")
    reader.read()
    assert reader.carry is CarryState.AFTER_UNTERMINATED
    reader.append(b"\n" + line(msg="b"))
    reader.read()
    assert [e.message for e in reader.entries] == ["a", "b"]
    assert (reader.lines, reader.bad) == (2, [])


GOOD_LINES = st.builds(lambda text: orjson.dumps({"msg": text}), st.text(max_size=12))
BAD_LINES = st.sampled_from(
    [b"not json", b"[1, 2]", b"", b"  ", b'{"a": 1', b'{"a":"\x00"}', b"\xff\xfe", b"42"]
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.lists(st.one_of(GOOD_LINES, BAD_LINES), max_size=6),
    crlf=st.booleans(),
    final_newline=st.booleans(),
    bom=st.booleans(),
    max_bytes=st.integers(1, 64),
    max_line_bytes=st.integers(8, 40),
    chunk_bytes=st.integers(1, 16),
)
# Found by hypothesis: a CRLF line one "\r" over the cap was too long read whole but
# accepted when split before its "\r\n"; both now measure it without the "\r".
@example(
    body=[orjson.dumps({"msg": "00000\x80\x80\x80\x80\x80\U00010000\U00010000"}), b'{"msg":""}'],
    crlf=True,
    final_newline=False,
    bom=False,
    max_bytes=1,
    max_line_bytes=33,
    chunk_bytes=1,
)
# Found by hypothesis: a CRLF line exactly at the cap, scanned in chunks that stopped
# on its "\r", was taken for a line still being written and the file stalled there.
@example(
    body=[b'{"msg":""}', b"not json"],
    crlf=True,
    final_newline=True,
    bom=False,
    max_bytes=1,
    max_line_bytes=8,
    chunk_bytes=3,
)
def test_two_appends_split_anywhere_read_like_the_whole_file(
    tmp_path: Path,
    body: list[bytes],
    crlf: bool,
    final_newline: bool,
    bom: bool,
    max_bytes: int,
    max_line_bytes: int,
    chunk_bytes: int,
) -> None:
    ending = b"\r\n" if crlf else b"\n"
    data = (b"\xef\xbb\xbf" if bom else b"") + ending.join(body)
    if final_newline and body:
        data += ending
    kw = {"max_bytes": max_bytes, "max_line_bytes": max_line_bytes, "chunk_bytes": chunk_bytes}
    whole = tail(tmp_path, data, **kw).read()
    for split in range(len(data) + 1):
        parts = tail(tmp_path, data[:split], **kw).read()
        parts.append(data[split:])
        parts.read()
        assert (parts.entries, parts.lines, parts.bad) == (whole.entries, whole.lines, whole.bad)
        assert (parts.offset, parts.carry) == (whole.offset, whole.carry)
