"""The journal's file rows: bookkeeping changes hand back the row as stored (issue 21: the
LogFile reconciler read each row again after every change)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from controller.analyze.traces import TraceAccumulator
from controller.api.entry import Entry
from controller.store.journal import Batch, Journal

GENERATE_FN = "github.com/jlewi/foyle/app/pkg/agent.(*Agent).Generate"


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


def test_trace_accumulators_are_stored_deflated_and_read_back_whole(tmp_path: Path) -> None:
    """Issue 23: a trace's accumulator (its request and response) is kept deflated."""
    request = {"doc": {"cells": [{"contents": f"echo {i} " * 20} for i in range(50)]}}
    acc = TraceAccumulator()
    acc.add(
        Entry(time=1.0, offset=0, digest=0, trace_id="t1", function=GENERATE_FN, request=request)
    )
    journal = Journal(tmp_path / "journal.db")
    try:
        row = journal.add_file(str(tmp_path / "a.json"), 1, 2, "ab", 2)
        journal.commit_batch(Batch(row.id, 0, 10, "", 10, 1, 0, None, {"t1": acc}), now=5.0)
        assert journal.trace_states(["t1"])["t1"].acc.to_dict() == acc.to_dict()
        with sqlite3.connect(tmp_path / "journal.db") as raw:
            (stored,) = raw.execute("SELECT length(acc) FROM traces").fetchone()
        assert stored * 4 < len(orjson.dumps(acc.to_dict()))
    finally:
        journal.close()
