"""Read complete JSON lines from (file, offset) in bounded chunks.

The caller persists `next_offset` and `carry` together as the file's watermark
and calls `read_batch` again when the file may have grown. Three facts shape
the reader:

* writers append the newline last, so a last line without one is usually still
  being written and is left for later; but some files end for good without a
  newline, so a last line that already is a complete JSON object is consumed
  when the caller says the file is quiet (`take_unterminated`: a first part
  that happens to be an object may still be continued), and
  `AFTER_UNTERMINATED` makes the next call swallow its late newline instead of
  counting an empty line;
* lines can be huge, so a line longer than `max_line_bytes` is discarded while
  scanning in chunks, never held whole (Foyle stopped a file forever at 64 MB);
  if its end is not written yet, `IN_OVERLONG` carries the discarding over;
* a bad line never stops the file: it is counted in `bad` and skipped.

Memory stays near max(max_bytes, chunk_bytes, max_line_bytes): the read window
holds at most one line plus one chunk, and a batch stops after ~max_bytes or
`max_lines` lines, whichever comes first. Both bounds are needed: a batch keeps
an object per line, and 8 MiB of blank lines is 8 million of them (1.1 GB).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, BinaryIO

import orjson

from controller.api.entry import Entry
from controller.logs.normalise import fits_depth, normalise

BOM = b"\xef\xbb\xbf"
CR = ord("\r")
MAX_LINE_BYTES = 16 << 20  # longer lines are skipped and counted as bad (--max-line-bytes)
MAX_BATCH_LINES = 20_000  # lines per batch: with max_bytes, memory follows bytes, not lines


class CarryState(StrEnum):
    """What the previous batch left unfinished (persisted with the watermark)."""

    NONE = "none"
    AFTER_UNTERMINATED = "after-unterminated"  # the last consumed line had no "\n" yet
    IN_OVERLONG = "in-overlong"  # inside an over-long line still being written


@dataclass(frozen=True)
class BadLine:
    offset: int
    reason: str  # invalid-json | not-an-object | invalid-utf8 | nul-bytes | empty | too-long
    # | too-deep (nested past what can be written again)


@dataclass
class ReadBatch:
    entries: list[Entry]  # normalised, in file order
    start_offset: int
    next_offset: int  # new watermark: every byte before it is processed
    carry: CarryState  # state to pass to the next call
    lines: int = 0  # lines consumed in this batch, good and bad
    bad: list[BadLine] = field(default_factory=list)
    bytes_read: int = 0  # bytes read from the file, read-ahead past next_offset included


def read_batch(
    f: BinaryIO,
    offset: int,
    carry: CarryState = CarryState.NONE,
    *,
    max_bytes: int = 4 << 20,
    max_line_bytes: int = MAX_LINE_BYTES,
    chunk_bytes: int = 1 << 20,
    max_lines: int = MAX_BATCH_LINES,
    take_unterminated: bool = True,
) -> ReadBatch:
    """Consume whole lines from `offset` until ~max_bytes or max_lines are consumed, or
    none is complete (a last complete object without its newline counts as complete
    only if `take_unterminated`)."""
    window = _Window(f, offset, chunk_bytes)
    batch = ReadBatch(entries=[], start_offset=offset, next_offset=offset, carry=carry)
    pos = offset
    if carry is CarryState.IN_OVERLONG:
        pos, found = window.skip_line(pos)
        if not found:
            return _finish(batch, window, pos, CarryState.IN_OVERLONG)
    elif carry is CarryState.AFTER_UNTERMINATED:
        end, complete = window.next_line(pos, max_line_bytes)
        if _length(window, pos, end, complete) <= max_line_bytes and window.is_blank(pos, end):
            if not complete:  # nothing new, or only the start of "\r\n": wait
                return _finish(batch, window, pos, carry)
            pos = end  # the newline (and any blanks) of the line already consumed
    while batch.lines == 0 or (pos - offset < max_bytes and batch.lines < max_lines):
        end, complete = window.next_line(pos, max_line_bytes)
        if _length(window, pos, end, complete) > max_line_bytes:
            _count_bad(batch, pos, "too-long")
            if complete:
                pos = end
                continue
            pos, found = window.skip_line(end)
            if not found:
                return _finish(batch, window, pos, CarryState.IN_OVERLONG)
            continue
        line = _parse(window.slice(pos, end), pos)
        if not complete and not (take_unterminated and isinstance(line, Entry)):
            break  # the last line is still being written
        if isinstance(line, Entry):
            batch.entries.append(line)
            batch.lines += 1
        else:
            _count_bad(batch, pos, line)
        pos = end
        if not complete:  # a finished object whose "\n" may still come
            return _finish(batch, window, pos, CarryState.AFTER_UNTERMINATED)
    return _finish(batch, window, pos, CarryState.NONE)


def read_all(
    f: BinaryIO, offset: int = 0, carry: CarryState = CarryState.NONE, **kw: Any
) -> Iterator[ReadBatch]:
    """Every batch from `offset` until one makes no progress (the last carry is the state)."""
    while True:
        batch = read_batch(f, offset, carry, **kw)
        if batch.next_offset == offset and batch.carry is carry:
            return
        yield batch
        offset, carry = batch.next_offset, batch.carry


def _finish(batch: ReadBatch, window: _Window, pos: int, carry: CarryState) -> ReadBatch:
    batch.next_offset = pos
    batch.carry = carry
    batch.bytes_read = window.bytes_read
    return batch


def _length(window: _Window, pos: int, end: int, complete: bool) -> int:
    """A line's length without its "\\n" or "\\r\\n" (or a last "\\r" still waiting for
    its "\\n"), so a read split anywhere measures a line as a whole read does."""
    length = end - pos - complete
    if length > 0 and window.byte(pos + length - 1) == CR:
        length -= 1
    return length


def _count_bad(batch: ReadBatch, offset: int, reason: str) -> None:
    batch.bad.append(BadLine(offset, reason))
    batch.lines += 1


def _parse(raw: bytes, offset: int) -> Entry | str:
    """The Entry of one line (its "\\n" included or not), or the reason it is bad."""
    content = raw.removesuffix(b"\n").removesuffix(b"\r")
    if offset == 0:
        content = content.removeprefix(BOM)
    if not content.strip():
        return "empty"
    try:
        obj = orjson.loads(content)
    except orjson.JSONDecodeError:
        return _why_invalid(content)
    if not isinstance(obj, dict):
        return "not-an-object"
    entry = normalise(obj, offset, zlib.crc32(content))
    return entry if fits_depth(content, entry) else "too-deep"


def _why_invalid(content: bytes) -> str:
    """Classify a line orjson rejected (the checks are only paid for bad lines)."""
    if b"\0" in content:
        return "nul-bytes"
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid-utf8"
    return "invalid-json"


class _Window:
    """A sliding window over the file: bytes [start, start + len(data)), read in chunks."""

    def __init__(self, f: BinaryIO, offset: int, chunk_bytes: int) -> None:
        f.seek(offset)
        self._f = f
        self._chunk = max(1, chunk_bytes)
        self.data = bytearray()
        self.start = offset
        self.bytes_read = 0

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def byte(self, at: int) -> int:
        return self.data[at - self.start]

    def slice(self, begin: int, end: int) -> bytes:
        return bytes(self.data[begin - self.start : end - self.start])

    def is_blank(self, begin: int, end: int) -> bool:
        return not self.slice(begin, end).strip()

    def next_line(self, pos: int, max_line_bytes: int) -> tuple[int, bool]:
        """(end, True) for a line ending in "\\n" at end - 1; (end of data, False) at EOF
        without one, or once more than max_line_bytes (and a "\\r") have been seen
        without one: a line at the cap that ends in "\\r\\n" is not over-long."""
        searched = pos
        while True:
            newline = self.data.find(b"\n", searched - self.start)
            if newline >= 0:
                return self.start + newline + 1, True
            searched = self.end
            if searched - pos > max_line_bytes + 1 or not self._fill(keep_from=pos):
                return self.end, False

    def skip_line(self, pos: int) -> tuple[int, bool]:
        """Discard through the next "\\n" without keeping the line: (end, found)."""
        while True:
            newline = self.data.find(b"\n", pos - self.start)
            if newline >= 0:
                return self.start + newline + 1, True
            pos = self.end
            if not self._fill(keep_from=pos):
                return pos, False

    def _fill(self, keep_from: int) -> bool:
        """Forget bytes before `keep_from`, append one chunk; False at end of file."""
        chunk = self._f.read(self._chunk)
        self.bytes_read += len(chunk)
        del self.data[: keep_from - self.start]  # cheap: bytearray trims its head in place
        self.data += chunk
        self.start = keep_from
        return bool(chunk)
