"""The file identity transition as a table: what is known, what is seen, what happened."""

from __future__ import annotations

import pytest

from controller.logs.transition import (
    FINGERPRINT_BYTES,
    Change,
    FileIdentity,
    Seen,
    change,
    continues,
    fingerprint,
)

HEAD = b'{"time":"2024-04-16T21:44:12Z","traceId":"t1"}\n'
# a short file's fingerprint covers all but its last byte (a newline taken away and put back)
KNOWN = FileIdentity(1, 7, fingerprint=fingerprint(HEAD[:-1]), fingerprint_len=len(HEAD) - 1)
READ = 100  # the watermark


def seen(*, device: int = 1, inode: int = 7, size: int = READ, head: bytes = HEAD) -> Seen:
    return Seen(device, inode, size, head)


@pytest.mark.parametrize(
    ("known", "observed", "expected"),
    [
        (KNOWN, None, Change.GONE),
        (None, None, Change.GONE),
        (None, seen(), Change.NEW),
        (KNOWN, seen(), Change.SAME),
        (KNOWN, seen(size=READ + 1), Change.GROWN),
        (KNOWN, seen(head=HEAD + b"more bytes"), Change.SAME),  # a longer head still starts alike
        (KNOWN, seen(size=READ - 1), Change.SHRUNK),  # e.g. the last newline taken away
        (KNOWN, seen(size=len(HEAD) - 1, head=HEAD[:-1]), Change.SHRUNK),  # a short file's "\n"
        (KNOWN, seen(size=len(HEAD) - 2, head=HEAD[:-2]), Change.TRUNCATED),  # first bytes gone
        (KNOWN, seen(size=0, head=b""), Change.TRUNCATED),
        (KNOWN, seen(size=READ + 50, head=b"X" + HEAD[1:]), Change.TRUNCATED),  # rewritten
        (KNOWN, seen(inode=8), Change.REPLACED),
        (KNOWN, seen(device=2), Change.REPLACED),
        (KNOWN, seen(inode=8, size=0, head=b""), Change.REPLACED),
    ],
    ids=lambda v: v.name if isinstance(v, Change) else None,
)
def test_change(known: FileIdentity | None, observed: Seen | None, expected: Change) -> None:
    assert change(known, READ, observed) is expected


def test_a_file_continues_when_same_grown_or_shrunk_with_its_first_bytes() -> None:
    assert continues(KNOWN, READ, seen())
    assert continues(KNOWN, READ, seen(size=READ * 2))
    assert continues(KNOWN, READ, seen(size=READ - 1))
    assert not continues(KNOWN, READ, seen(size=READ - 1, head=b"X" + HEAD[1:]))
    assert not continues(KNOWN, READ, seen(inode=8))


def test_an_empty_file_fingerprint_matches_any_content_of_that_inode() -> None:
    empty = Seen(1, 7, 0, b"").identity()
    assert change(empty, 0, seen(size=len(HEAD))) is Change.GROWN


def test_the_identity_of_what_is_seen_fingerprints_its_head() -> None:
    assert seen().identity() == KNOWN
    longer = b"x" * FINGERPRINT_BYTES + b"\n"
    assert seen(head=longer).identity().fingerprint_len == FINGERPRINT_BYTES
    assert seen(head=longer[:-1]).identity().fingerprint_len == FINGERPRINT_BYTES - 1
    assert seen(head=b"\n").identity().fingerprint_len == 1  # a byte tells it from empty
