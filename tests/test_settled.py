"""Settled members (analyze.blocklogs/sessions): a BlockLog or Session whose member Traces
are gone (deleted from the cluster once final) joins to the same status from what its
spec keeps of them, whatever the order and mix of settled and present members; and from
the join view a Trace too large for etcd is written with."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from controller.analyze import blocklogs, sessions
from controller.reconcilers.retention import join_view
from controller.store.sqlite import SQLiteStore
from tests.cli_helpers import foylectl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
import gen_logs  # noqa: E402

Spec = dict[str, Any]


@pytest.fixture(params=["samples", "generated"])
def analyzed(request: pytest.FixtureRequest, testdata: Path, tmp_path: Path) -> SQLiteStore:
    logs = testdata
    if request.param == "generated":
        logs = tmp_path / "logs"
        gen_logs.generate(logs, size_bytes=300_000, seed=5, bad_lines=0)
    foylectl("analyze", "--logs", logs, "--state-dir", tmp_path / "state", "--no-learn")
    return SQLiteStore(tmp_path / "state" / "store.db")


def _settle_blocklog(spec: Spec, traces: dict[str, Spec], settled: list[str]) -> Spec:
    for trace_id in settled:
        spec = blocklogs.membership_add(
            spec, spec["id"], traces[trace_id], listed_before=True, settled=True
        )
    return spec


def test_every_blocklog_joins_the_same_without_its_settled_traces(
    analyzed: SQLiteStore,
) -> None:
    traces = {t["spec"]["id"]: t["spec"] for t in analyzed.list("Trace")}
    rng = random.Random(7)
    found = analyzed.list("BlockLog")
    assert found and any(o["spec"].get("genTraceId") for o in found)
    for blocklog in found:
        spec = blocklog["spec"]
        members = blocklogs.member_ids(spec)
        want = blocklogs.blocklog_status(spec, traces)
        rng.shuffle(members)
        every = _settle_blocklog(spec, traces, members)
        assert {k: v for k, v in every.items() if k != "settled"} == spec  # members as they were
        assert blocklogs.blocklog_status(every, {}) == want, spec["id"]
        some = _settle_blocklog(spec, traces, members[: len(members) // 2])
        present = {t: traces[t] for t in members[len(members) // 2 :]}
        assert blocklogs.blocklog_status(some, present) == want, spec["id"]
        # what is kept is what the status reads, not the Traces, nor what the spec has
        assert len(every.get("settled", {})) <= 3
        assert not any({"id", "startTime"} & set(c) for c in every.get("settled", {}).values())
        kept = orjson.dumps(every.get("settled", {}))
        assert len(kept) <= len(orjson.dumps([traces[t] for t in members])), spec["id"]
        # once the status shows the generation, its notebook is stored there only
        compact = blocklogs.compact_settled(every, want)
        assert blocklogs.blocklog_status(compact, {}, previous=want) == want, spec["id"]
        some = blocklogs.compact_settled(some, want)
        assert blocklogs.blocklog_status(some, present, previous=want) == want, spec["id"]
        if spec.get("genTraceId") and "doc" in want:
            assert "doc" not in orjson.dumps(compact["settled"]).decode(), spec["id"]


def test_every_session_joins_the_same_without_its_settled_traces(
    analyzed: SQLiteStore,
) -> None:
    traces = {t["spec"]["id"]: t["spec"] for t in analyzed.list("Trace")}
    rng = random.Random(11)
    found = analyzed.list("Session")
    assert found
    for session in found:
        spec = session["spec"]
        want = sessions.session_status(spec, traces)
        members = list(spec["traceIds"])
        rng.shuffle(members)
        every = spec
        for trace_id in members:
            contribution = sessions.session_contribution(traces[trace_id])
            every = sessions.membership_add(every, spec["contextId"], trace_id, contribution)
        assert every["traceIds"] == spec["traceIds"]
        assert not any({"id", "contextId"} & set(c) for c in every.get("settled", {}).values())
        assert sessions.session_status(every, {}) == want, spec["contextId"]
        some = every
        for trace_id in members[: len(members) // 2]:  # removed and added back, not settled
            some = sessions.membership_add(
                sessions.membership_remove(some, trace_id), spec["contextId"], trace_id
            )
        present = {t: traces[t] for t in members[: len(members) // 2]}
        assert sessions.session_status(some, present) == want, spec["contextId"]
        # once the status shows the events and context, their bodies are stored there only
        compact = sessions.compact_settled(every, want)
        assert sessions.session_status(compact, {}, previous=want) == want, spec["contextId"]
        some = sessions.compact_settled(some, want)
        assert sessions.session_status(some, present, previous=want) == want, spec["contextId"]
        if want["logEvents"] or "fullContext" in want:
            assert len(orjson.dumps(compact)) < len(orjson.dumps(every)), spec["contextId"]
            with pytest.raises(ValueError, match="in the status"):
                sessions.session_status(compact, {})
        assert "cells" not in orjson.dumps(compact).decode() or any(
            c["kind"] == "LogEvent" and not c.get("inStatus") for c in compact["settled"].values()
        ), spec["contextId"]


def test_every_blocklog_joins_the_same_from_the_join_view_of_its_traces(
    analyzed: SQLiteStore,
) -> None:
    """join_view is what a Trace too large for etcd is written with."""
    traces = {t["spec"]["id"]: t["spec"] for t in analyzed.list("Trace")}
    elided = {trace_id: join_view(spec) for trace_id, spec in traces.items()}
    size = sum(len(orjson.dumps(s)) for s in traces.values())
    assert sum(len(orjson.dumps(s)) for s in elided.values()) < size  # something went
    found = analyzed.list("BlockLog")
    assert found
    for blocklog in found:
        spec = blocklog["spec"]
        assert set(blocklogs.member_ids(spec)) <= set(traces)
        assert blocklogs.blocklog_status(spec, elided) == blocklogs.blocklog_status(spec, traces), (
            spec["id"]
        )


def test_a_settled_member_removed_leaves_nothing_of_it() -> None:
    gen = {
        "id": "g",
        "kind": "Generate",
        "startTime": "2024-01-01T00:00:00Z",
        "evalMode": False,
        "blockIds": ["b"],
        "request": {"doc": {"blocks": []}},
        "response": {"blocks": [{"id": "b", "kind": "CODE", "contents": "ls"}, {"id": "c"}]},
    }
    spec = blocklogs.membership_add(None, "b", gen, settled=True)
    assert spec["settled"]["g"]["response"] == {"blocks": [gen["response"]["blocks"][0]]}
    assert "settled" not in blocklogs.membership_remove(spec, "g")


def test_a_compacted_generation_rejoins_the_same_and_needs_the_stored_status(
    analyzed: SQLiteStore,
) -> None:
    """Members joined after the generation was compacted (an execution, a later and an
    earlier generation) give the status a BlockLog with every Trace present gives."""
    traces = {t["spec"]["id"]: t["spec"] for t in analyzed.list("Trace")}
    found = [o["spec"] for o in analyzed.list("BlockLog") if o["spec"].get("genTraceId")]
    others = [t for t in traces.values() if t["kind"] != "Generate"]
    assert found and others
    for spec in found:
        block, gen = spec["id"], traces[spec["genTraceId"]]
        alone = blocklogs.membership_add(None, block, gen, settled=True)
        status = blocklogs.blocklog_status(alone, {})
        compact = blocklogs.compact_settled(alone, status)
        assert compact != alone and "request" not in compact["settled"][gen["id"]], block
        with pytest.raises(ValueError, match="in the status"):
            blocklogs.blocklog_status(compact, {})
        execution = dict(others[0], blockIds=[block])
        later = dict(gen, id="later", startTime="9999-01-01T00:00:00Z")
        earlier = dict(gen, id="earlier", startTime="0001-01-01T00:00:00Z")
        for extra in (execution, later, earlier):
            joined = blocklogs.membership_add(compact, block, extra)
            plain = blocklogs.membership_add(alone, block, extra)
            want = blocklogs.blocklog_status(plain, {extra["id"]: extra})
            got = blocklogs.blocklog_status(joined, {extra["id"]: extra}, previous=status)
            assert got == want, (block, extra["id"])


def test_a_compacted_session_rejoins_the_same(analyzed: SQLiteStore) -> None:
    """Events joined after the settled members were compacted (the earliest, the latest,
    one repeating an eventId the session shows) give the status of the plain spec."""
    traces = {t["spec"]["id"]: t["spec"] for t in analyzed.list("Trace")}
    events = [t for t in traces.values() if t["kind"] == "LogEvent"]
    found = [o["spec"] for o in analyzed.list("Session")]
    assert found and events
    for spec in found:
        plain = spec
        for trace_id in spec["traceIds"]:
            contribution = sessions.session_contribution(traces[trace_id])
            plain = sessions.membership_add(plain, spec["contextId"], trace_id, contribution)
        status = sessions.session_status(plain, {})
        compact = sessions.compact_settled(plain, status)
        shown = [e["eventId"] for e in status["logEvents"]]
        extras = [
            dict(events[0], id="x-first", startTime="0001-01-01T00:00:00Z"),
            dict(events[0], id="x-last", startTime="9999-01-01T00:00:00Z"),
        ]
        if shown:
            request = dict(events[0]["request"], eventId=shown[0])
            extras.append(
                dict(events[0], id="x-dup", startTime="0002-01-01T00:00:00Z", request=request)
            )
        for extra in extras:
            extra = dict(extra, contextId=spec["contextId"])
            want = sessions.session_status(
                sessions.membership_add(plain, spec["contextId"], extra["id"]), {extra["id"]: extra}
            )
            joined = sessions.membership_add(compact, spec["contextId"], extra["id"])
            got = sessions.session_status(joined, {extra["id"]: extra}, previous=status)
            assert got == want, (spec["contextId"], extra["id"])
            again = sessions.session_status(joined, {extra["id"]: extra}, previous=got)
            assert again == want, (spec["contextId"], extra["id"])
