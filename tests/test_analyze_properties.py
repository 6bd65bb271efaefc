"""The analysis is order-free: any feeding order, chunking or snapshotting gives one result.

This is what lets the continuous controllers (late lines, several files,
journal snapshots, CAS joins) promise the one-shot result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_analyze_traces import EXECUTE_FN, GENERATE_FN, RUNME_FN, load_entries, reduce_all

from controller.analyze.blocklogs import membership_add
from controller.analyze.oneshot import analyze
from controller.analyze.traces import TraceAccumulator, reduce_trace, trace_key
from controller.api.entry import Entry

LOG_EVENTS_FN = "github.com/jlewi/foyle/app/pkg/agent.(*Agent).LogEvents"
FUNCTIONS = [
    GENERATE_FN,
    EXECUTE_FN,
    RUNME_FN,
    RUNME_FN + ".func5",
    LOG_EVENTS_FN,
    "github.com/jlewi/foyle/app/pkg/agent.(*Agent).completeWithRetries",
    "github.com/jlewi/foyle/app/pkg/agent.(*Agent).StreamGenerate",
]
MESSAGES = [
    "Agent.Generate returning response",
    "Executed instructions",
    "sending the final response with exit code",
    "command finished",
    "something else",
]
IDS = st.sampled_from(["a", "b", ""])
BLOCK = st.fixed_dictionaries({"id": IDS, "kind": st.sampled_from(["CODE", 1]), "contents": IDS})
REQUESTS = st.one_of(
    st.none(),
    st.fixed_dictionaries({"block": BLOCK}),
    st.fixed_dictionaries({"doc": st.fixed_dictionaries({"blocks": st.lists(BLOCK, max_size=2)})}),
    st.fixed_dictionaries({"commands": st.lists(IDS, max_size=2), "knownId": IDS}),
)
RESPONSES = st.one_of(
    st.none(),
    st.fixed_dictionaries({"blocks": st.lists(BLOCK, max_size=3)}),
    st.builds(
        lambda n: {"outputs": [{"items": [{"textData": f"exitCode: {n}"}]}]}, st.integers(0, 2)
    ),
)
EVENTS = st.fixed_dictionaries(
    {"eventType": st.sampled_from(["ACCEPTED", "REJECTED", "EXECUTE"]), "selectedCellId": IDS},
    optional={
        "eventId": st.sampled_from(["E1", "E2"]),
        "event": st.fixed_dictionaries(
            {
                "cells": st.lists(
                    st.fixed_dictionaries({"metadata": st.fixed_dictionaries({"id": IDS})}),
                    max_size=2,
                )
            }
        ),
    },
)


@st.composite
def synthetic_entry(draw: st.DrawFn) -> Entry:
    """Small domains on purpose: equal times, shared ids and competing candidates are common."""
    function = draw(st.sampled_from(FUNCTIONS))
    is_event = function == LOG_EVENTS_FN
    return Entry(
        time=draw(st.sampled_from([1.0, 2.0, 3.0])),
        offset=draw(st.integers(0, 2)),
        digest=draw(st.integers(0, 1)),
        trace_id="" if is_event else draw(st.sampled_from(["t1", "t2", "", "T3"])),
        function=function,
        message=draw(st.sampled_from(MESSAGES)),
        eval_mode=draw(st.booleans()),
        request=draw(REQUESTS),
        response=draw(RESPONSES),
        exit_code=draw(st.one_of(st.none(), st.integers(0, 2))),
        known_id=draw(IDS),
        block_ids=tuple(draw(st.lists(IDS, max_size=2))),
        event=draw(EVENTS) if is_event else None,
    )


@pytest.fixture(scope="module")
def samples(testdata: Path) -> list[Entry]:
    return [e for path in sorted(testdata.iterdir()) for e in load_entries(path)]


ENTRY_LISTS = st.lists(synthetic_entry(), max_size=25)
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _accumulate(entries: list[Entry]) -> dict[str, TraceAccumulator]:
    accs: dict[str, TraceAccumulator] = {}
    for entry in entries:
        key = trace_key(entry)
        if key is not None:
            accs.setdefault(key, TraceAccumulator()).add(entry)
    return accs


def _via_json(acc: TraceAccumulator) -> TraceAccumulator:
    return TraceAccumulator.from_dict(json.loads(json.dumps(acc.to_dict())))


@SETTINGS
@given(extra=ENTRY_LISTS, data=st.data())
def test_any_permutation_gives_the_same_analysis(
    samples: list[Entry], extra: list[Entry], data: st.DataObject
) -> None:
    entries = samples + extra
    shuffled = data.draw(st.permutations(entries))
    assert analyze(shuffled) == analyze(entries)


@SETTINGS
@given(extra=ENTRY_LISTS, data=st.data())
def test_chunks_accumulated_apart_and_merged_match_one_pass(
    samples: list[Entry], extra: list[Entry], data: st.DataObject
) -> None:
    entries = data.draw(st.permutations(samples + extra))
    cuts = sorted(data.draw(st.sets(st.integers(0, len(entries)), max_size=6)))
    bounds = [0, *cuts, len(entries)]
    chunks = [_accumulate(entries[lo:hi]) for lo, hi in zip(bounds, bounds[1:], strict=False)]

    merged: dict[str, TraceAccumulator] = {}
    for chunk in data.draw(st.permutations(chunks)):
        for key, acc in chunk.items():
            snapshot = _via_json(acc)  # as the journal keeps it
            if key in merged:
                merged[key].merge(snapshot)
            else:
                merged[key] = snapshot

    whole = _accumulate(entries)
    assert {k: a.to_dict() for k, a in merged.items()} == {k: a.to_dict() for k, a in whole.items()}
    reduced = {k: reduce_trace(k, a) for k, a in merged.items()}
    assert {k: r for k, r in reduced.items() if r is not None} == reduce_all(entries)


@SETTINGS
@given(extra=ENTRY_LISTS, data=st.data())
def test_membership_in_any_trace_order_is_identical(
    samples: list[Entry], extra: list[Entry], data: st.DataObject
) -> None:
    entries = samples + extra
    specs = {key: spec for key, (spec, _) in reduce_all(entries).items()}

    membership: dict[str, dict[str, Any]] = {}
    for trace_id in data.draw(st.permutations(sorted(specs))):
        for block_id in specs[trace_id]["blockIds"]:
            membership[block_id] = membership_add(
                membership.get(block_id), block_id, specs[trace_id]
            )

    _, blocklogs = analyze(entries)
    assert membership == {b["spec"]["id"]: b["spec"] for b in blocklogs}
