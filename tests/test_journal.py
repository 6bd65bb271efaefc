"""The journal's file rows: bookkeeping changes hand back the row as stored (issue 21: the
LogFile reconciler read each row again after every change)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.store.journal import Journal


def test_update_file_returns_the_row_as_a_fresh_read_sees_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    try:
        row = journal.add_file(str(tmp_path / "a.json"), 1, 2, "ab", 2)
        updated = journal.update_file(row.id, phase="Rotated", unread_bytes=7, size=40)
        assert (updated.phase, updated.unread_bytes, updated.size) == ("Rotated", 7, 40)
        assert updated == journal.file(row.id)
        assert journal.update_file(row.id) == updated  # nothing to change: the row as it is
    finally:
        journal.close()


@pytest.mark.parametrize(
    ("fields", "error"),
    [({"watermark": 5}, ValueError), ({"colour": "red"}, ValueError), ({"phase": "x"}, KeyError)],
    ids=["watermark", "unknown-field", "unknown-row"],
)
def test_update_file_refuses_the_watermark_unknown_fields_and_rows(
    tmp_path: Path, fields: dict[str, object], error: type[Exception]
) -> None:
    journal = Journal(tmp_path / "journal.db")
    try:
        row_id = journal.add_file(str(tmp_path / "a.json"), 1, 2, "ab", 2).id
        with pytest.raises(error):
            journal.update_file(row_id + 1 if error is KeyError else row_id, **fields)
    finally:
        journal.close()
