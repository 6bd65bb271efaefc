"""Deterministic, realistic Foyle and RunMe log corpora for tests and the benchmark.

A corpus is a sequence of user *sessions*. A session is what one user does with
one notebook: Foyle's Generate trace (request doc, the OpenAI call, "returning
blocks", "returning response"), maybe an ACCEPTED/REJECTED LogEvent, then some
of the suggested code blocks executed, through RunMe (several lines per `_id`,
`knownID` = the block id) or Foyle's executor, sometimes after the user edited
the command (the learnable case), sometimes with an EXECUTE LogEvent. A few
sessions run in eval mode. Server noise without trace ids sits in between.

With `streaming=True` (`--streaming`) a session is also what Foyle v0.0.37+
logs for its session learner (issue 11): one RunMe context id on SESSION_START
and SESSION_END LogEvents, StreamGenerate's "Received full context" (the
notebook and the selected cell), the Generate lines and a LogLLMUsage line, and
an EXECUTE LogEvent with an execute status for every execution. As in real
traffic, the extension sometimes sends a LogEvent twice (the same event id: 5%)
and a session sometimes never ends (the window closed: 10%, no SESSION_END),
and the function names are the closures Foyle v0.0.45 really logs from.

Files are laid out the way the servers write them: `foyle/` holds one
`foyle.logs.<ts>.json` per Foyle server start (sessions split into contiguous
runs), `runme/` holds several `logs.<ts>.json` written concurrently (each
session's executions go to one of them). Every line is zap JSON with the keys,
function names and messages of the real samples (tests/data/foyle).

Everything is drawn from one `random.Random(seed)`, so a seed gives the same
bytes. `session_lines` / `build_session` make one session, and `Appender`
writes sessions one at a time into a generated directory, so live tests and
the benchmark can grow a corpus while a controller follows it.

CLI: `python hack/gen_logs.py OUT_DIR --size 100MB --seed 1`.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

FOYLE, RUNME = "foyle", "runme"  # file roles; also the sub-directory names
FOYLE_PKG = "github.com/jlewi/foyle/app/pkg"
RUNME_PKG = "github.com/stateful/runme/v3/internal"
GENERATE_FN = f"{FOYLE_PKG}/agent.(*Agent).Generate"
COMPLETE_FN = f"{FOYLE_PKG}/agent.(*Agent).completeWithRetries"
STREAM_FN = f"{FOYLE_PKG}/agent.(*Agent).StreamGenerate"
# The names Go gives the closures Foyle v0.0.45 logs from (agent.go:641, and agent.go:400 in
# a closure inside the stream reader closure); Foyle matches them by prefix (matchers/names.go).
LOG_EVENTS_FN = f"{FOYLE_PKG}/agent.(*Agent).LogEvents.func1"
STREAM_READER_FN = f"{FOYLE_PKG}/agent.(*Agent).StreamGenerate.func2.2"
USAGE_FN = f"{FOYLE_PKG}/logs.LogLLMUsage"
EXECUTE_FN = f"{FOYLE_PKG}/executor.(*Executor).Execute"
RUNNER_FN = f"{RUNME_PKG}/runner.(*runnerService).Execute"
GENERATE_END = "Agent.Generate returning response"
END_RUNME = "sending the final response with exit code"
EDITOR_CALLER = "editorservice/service.go:103"
SERIALIZE_FN = "github.com/stateful/runme/v3/pkg/document/editor/editorservice.(*parserServiceServer).Serialize"
MODEL = "gpt-3.5-turbo-0125"
Gap = tuple[float, float]  # seconds since the previous line: drawn uniformly from the range

SYSTEM_PROMPT = (
    "You are a helpful AI assistant for software developers. You are helping software engineers"
    " write markdown documents to deploy\nand operate software. Your job is to help users reason"
    " about problems and tasks and come up with the appropriate\ncommands to accomplish them. You"
    " should never try to execute commands. You should always tell the user\nto execute the"
    " commands themselves. To help the user place the commands inside a code block with the"
    " language set to\nbash. Users can then execute the commands inside VSCode notebooks. The"
    " output will then be appended to the document.\nYou can then use that output to reason about"
    " the next steps.\n\nYou are only helping users with tasks related to building, deploying,"
    " and operating software. You should interpret\nany questions or commands in that context.\n"
)
USER_PREAMBLE = (
    "Please continue writing this markdown document to deal with any tasks or issues listed\nin"
    " the document. The document is a markdown document. It will contain a description of the"
    " task\nor problem, I need your help with. It will then contain one or more code blocks"
    " containing commands\nto be executed to accomplish the task or obtain information needed to"
    " figure out the problem.\nIf a command has already been executed the output of the command"
    " will be provided in a code block\nwith the language `output`. Use the output to help you"
    " figure out the problem or complete the task.\nIf you need me to execute a command please"
    " provide the command in a code block and I will execute it\nand then add the output to the"
    " document.\n\nHere's the document:\n\n"
)

TASKS = (
    "Use gcloud to read the logs for the cluster {c} in project {p}; assume you already logged in",
    "Why is the deployment {d} in namespace {n} crash looping?",
    "List the pods in namespace {n} of cluster {c} and show which ones restarted",
    "Scale the deployment {d} to 3 replicas in project {p}",
    "Find the last build of {d} in project {p} and show its status",
    "Check the disk usage of the nodes in cluster {c}",
    "Roll back the deployment {d} in namespace {n} to the previous revision",
)
COMMANDS = (
    "gcloud logging read --project={p} 'resource.labels.cluster_name=\"{c}\"' --limit=50",
    "gcloud container clusters get-credentials {c} --project={p}",
    "kubectl get pods -n {n}",
    "kubectl logs deployment/{d} -n {n} --tail=100",
    "kubectl describe deployment {d} -n {n}",
    "kubectl scale deployment {d} --replicas=3 -n {n}",
    "kubectl rollout undo deployment/{d} -n {n}",
    "kubectl top nodes",
    "gcloud builds list --project={p} --filter='tags={d}' --limit=1",
    "kubectl get events -n {n} --sort-by=.lastTimestamp",
)
EDITS = (" --context={c}", " -o wide", " | head -20", " --project={p}-prod", " --since=1h")
PROSE = (
    "This command will authenticate `kubectl` to the cluster `{c}` in the `{p}` project.",
    "After this, you can use `kubectl` to inspect the workloads. Here's the command to run next:",
    "Replace `<pod_name>` with the name of the pod for which you want to read the logs.",
    "If the output shows errors, paste it below and I will help you figure out the next step.",
    "Please execute the commands above and provide the output if you need further assistance.",
    "The events are sorted by time, so the most recent problem is at the bottom.",
)
NAMES = {
    "c": ("dev", "prod", "staging", "ml-train", "edge"),
    "p": ("foyle-dev", "foyle-prod", "acme-infra", "data-lake", "sandbox-42"),
    "n": ("default", "kube-system", "foyle", "monitoring", "ingress"),
    "d": ("frontend", "api-server", "worker", "foyle-agent", "billing"),
}
EXTENSIONS = ("css", "docker", "go", "json", "markdown-basics", "python", "shellscript", "yaml")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


@dataclass
class Session:
    """One session's lines (file role, line ending in b"\\n") and the ids it produced."""

    lines: list[tuple[str, bytes]] = field(default_factory=list)
    gen_trace_id: str = ""
    trace_ids: list[str] = field(default_factory=list)  # every trace: generate + executions
    block_ids: list[str] = field(default_factory=list)  # generated blocks
    executed_block_ids: list[str] = field(default_factory=list)
    edited_block_ids: list[str] = field(default_factory=list)  # latest run differs from suggestion
    eval_mode: bool = False
    end_time: float = 0.0  # the `time` of the session's last line
    context_id: str = ""  # the RunMe context id (streaming sessions only)


@dataclass
class GenStats:
    files: list[Path] = field(default_factory=list)
    bytes: int = 0
    lines: int = 0
    bad_lines: int = 0
    sessions: int = 0
    eval_sessions: int = 0
    generated_blocks: int = 0
    executed_blocks: int = 0
    edited_blocks: int = 0
    end_time: float = 0.0


def _hex(rng: random.Random, bits: int) -> str:
    return f"{rng.getrandbits(bits):0{bits // 4}x}"


def _uuid(rng: random.Random) -> str:
    h = _hex(rng, 128)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _ulid(rng: random.Random, t: float) -> str:
    """A ULID (48-bit ms time + 80 random bits), as RunMe uses for `_id`."""
    value = (int(t * 1000) << 80) | rng.getrandbits(80)
    return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def _line(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj) + b"\n"


def _foyle(t: float, caller: str, function: str, message: str, **fields: Any) -> bytes:
    head = {"severity": "info", "time": t, "caller": caller, "function": function}
    return _line({**head, "message": message, **fields})


def _runme(t: float, caller: str, function: str, msg: str, **fields: Any) -> bytes:
    return _line(
        {"level": "info", "ts": t, "caller": caller, "function": function, "msg": msg} | fields
    )


def _block(kind: str, contents: str, block_id: str, language: str = "") -> dict[str, Any]:
    return {
        "kind": kind,
        "language": language,
        "contents": contents,
        "outputs": [],
        "trace_ids": [],
        "id": block_id,
    }


def _markdown(blocks: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"```bash\n{b['contents']}```" if b["kind"] == "CODE" else b["contents"] for b in blocks
    )


def _cell(block: dict[str, Any]) -> dict[str, Any]:
    """A block as vscode/RunMe logs a notebook cell inside a LogEvent."""
    code = block["kind"] == "CODE"
    return {
        "kind": "CELL_KIND_CODE" if code else "CELL_KIND_MARKUP",
        "value": block["contents"],
        "languageId": "bash" if code else "markdown",
        "metadata": {"id": block["id"], "runme.dev/id": block["id"]},
    }


class _SessionBuilder:
    """Draws one session from `rng`; each method appends the lines of one trace."""

    def __init__(
        self,
        rng: random.Random,
        t0: float,
        eval_mode: bool,
        edit_rate: float,
        streaming: bool = False,
    ) -> None:
        self.rng = rng
        self.t = t0
        self.edit_rate = edit_rate
        self.streaming = streaming
        self.names = {k: rng.choice(v) for k, v in NAMES.items()}
        self.s = Session(eval_mode=eval_mode)
        if streaming:
            self.s.context_id = _ulid(rng, t0)

    def foyle(self, gap: Gap, caller: str, function: str, message: str, **fields: Any) -> None:
        """A Foyle line `gap` seconds (drawn from the range) after the previous one."""
        self.s.lines.append((FOYLE, _foyle(self._tick(gap), caller, function, message, **fields)))

    def runme(
        self, gap: Gap, line: int, msg: str, function: str = RUNNER_FN, **fields: Any
    ) -> None:
        """A RunMe runner line (runner/service.go:`line`), `gap` after the previous one."""
        caller = f"runner/service.go:{line}"
        self.s.lines.append((RUNME, _runme(self._tick(gap), caller, function, msg, **fields)))

    def _tick(self, gap: Gap) -> float:
        self.t = self.s.end_time = round(self.t + self.rng.uniform(*gap), 6)
        return self.t

    def fill(self, template: str) -> str:
        return template.format(**self.names)

    def eval_field(self) -> dict[str, Any]:
        return {"evalMode": True} if self.s.eval_mode else {}

    def request_doc(self) -> list[dict[str, Any]]:
        rng = self.rng
        doc = [_block("MARKUP", self.fill(rng.choice(TASKS)), "", "markdown")]
        for _ in range(rng.randint(0, 2)):
            doc.append(_block("CODE", self.fill(rng.choice(COMMANDS)) + "\n", _uuid(rng), "bash"))
            doc.append(_block("MARKUP", self.fill(rng.choice(PROSE)), _uuid(rng), "markdown"))
        return doc

    def suggestion(self, pairs: int | None = None) -> list[dict[str, Any]]:
        """`pairs` (prose, code) blocks; drawn (2 to 4) unless given."""
        rng = self.rng
        blocks = []
        for _ in range(rng.randint(2, 4) if pairs is None else pairs):
            blocks.append(_block("MARKUP", self.fill(rng.choice(PROSE)), _uuid(rng)))
            commands = [self.fill(rng.choice(COMMANDS)) for _ in range(rng.choice((1, 1, 1, 2)))]
            blocks.append(_block("CODE", "\n".join(commands) + "\n", _uuid(rng), "bash"))
        return blocks

    def completion(self, blocks: list[dict[str, Any]]) -> dict[str, Any]:
        """OpenAI's chat completion whose answer was parsed into `blocks`."""
        rng = self.rng
        prompt, completion = rng.randint(300, 3000), rng.randint(80, 600)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion}
        return {
            "id": f"chatcmpl-{_hex(rng, 112)}",
            "object": "chat.completion",
            "created": int(self.t),
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": _markdown(blocks)},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage | {"total_tokens": prompt + completion},
            "system_fingerprint": f"fp_{_hex(rng, 40)}",
        }

    def context_field(self) -> dict[str, Any]:
        return {"contextId": self.s.context_id} if self.streaming else {}

    def full_context(self, doc: list[dict[str, Any]], blocks: list[dict[str, Any]]) -> None:
        """StreamGenerate's first request: the notebook, the user in the cell after `doc`."""
        cell = next(b for b in blocks if b["kind"] == "CODE")
        context = {"notebook": {"cells": [_cell(b) for b in [*doc, cell]]},
                   "selected": len(doc), "notebookUri": "file:///home/user/notebooks/ops.md"}  # fmt: skip
        self.foyle((0.05, 0.5), "agent/agent.go:400", STREAM_READER_FN, "Received full context",
                   traceId=_hex(self.rng, 128), contextId=self.s.context_id, context=context)  # fmt: skip

    def generate(self, pairs: int | None = None) -> list[dict[str, Any]]:
        ev, trace_id = self.eval_field() | self.context_field(), _hex(self.rng, 128)
        self.s.gen_trace_id = trace_id
        self.s.trace_ids.append(trace_id)
        doc, blocks = self.request_doc(), self.suggestion(pairs)
        if self.streaming:
            self.full_context(doc, blocks)
        request = {"doc": {"blocks": doc}}
        self.foyle((0.1, 2), "agent/agent.go:61", GENERATE_FN, "Agent.Generate", **ev,
                   traceId=trace_id, request=request)  # fmt: skip
        prompt = USER_PREAMBLE + _markdown(doc) + "\n"
        messages = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": prompt},
        ]
        chat = {"model": MODEL, "messages": messages, "max_tokens": 2000, "temperature": 0.9}
        self.foyle((0.001, 0.01), "agent/agent.go:117", COMPLETE_FN, "OpenAI:CreateChatCompletion",
                   traceId=trace_id, request=chat)  # fmt: skip
        completion = self.completion(blocks)
        self.foyle((1, 4), "agent/agent.go:132", COMPLETE_FN, "OpenAI:CreateChatCompletion response",
                   traceId=trace_id, resp=completion)  # fmt: skip
        if self.streaming:
            tokens = completion["usage"]
            usage = {"inputTokens": tokens["prompt_tokens"], "model": MODEL, "provider": "openai",
                     "outputTokens": tokens["completion_tokens"]}  # fmt: skip
            self.foyle((0.0001, 0.001), "logs/logs.go:78", USAGE_FN, "LLM usage",
                       traceId=trace_id, contextId=self.s.context_id, usage=usage)  # fmt: skip
        ids = [b["id"] for b in blocks]
        self.foyle((0.001, 0.003), "agent/agent.go:76", GENERATE_FN,
                   "Agent.Generate returning blocks", **ev, traceId=trace_id, blockIds=ids)  # fmt: skip
        self.foyle((0.00005, 0.0002), "agent/agent.go:83", GENERATE_FN, GENERATE_END, **ev,
                   traceId=trace_id, response={"blocks": blocks})  # fmt: skip
        self.s.block_ids.extend(ids)
        return blocks

    def log_event(
        self,
        event_type: str,
        selected: dict[str, Any] | None,
        cells: list[dict[str, Any]],
        **extra: Any,
    ) -> None:
        event_id, context_id = _uuid(self.rng), _ulid(self.rng, self.t)
        ids = {"eventId": event_id, "contextId": self.s.context_id or context_id}
        selection = (
            {"selectedIndex": cells.index(selected), "selectedId": selected["id"]}
            if selected
            else {}
        )
        event = {"type": event_type, "cells": [_cell(c) for c in cells]} | selection | ids | extra
        selected_id = selected["id"] if selected else ""
        resent = self.streaming and self.rng.random() < 0.05  # a retry: the same event again
        for _ in range(2 if resent else 1):
            self.foyle((0.2, 3), "agent/agent.go:653", LOG_EVENTS_FN, "LogEvent", **ids,
                       eventType=event_type, selectedCellId=selected_id, event=event)  # fmt: skip

    def edited(self, contents: str) -> str:
        lines = contents.rstrip("\n").split("\n")
        i = self.rng.randrange(len(lines))
        lines[i] += self.fill(self.rng.choice(EDITS))
        return "\n".join(lines) + "\n"

    def runme_execute(self, block: dict[str, Any], contents: str) -> None:
        rng = self.rng
        run_id, session_id = _ulid(rng, self.t), _ulid(rng, self.t - 60)
        ids = {"_id": run_id, "knownID": block["id"], "knownName": ""}
        exit_code = rng.choice((0, 0, 0, 1))
        self.s.trace_ids.append(run_id)
        req = {"commandMode": "COMMAND_MODE_INLINE_SHELL", "commands": contents.split("\n"),
               "directory": "/home/user/notebooks", "envs": [f"RUNME_ID={block['id']}", "TERM="],
               "knownId": block["id"], "knownName": "", "languageId": "sh",
               "programName": "/bin/bash", "sessionId": session_id, "storeLastOutput": True}  # fmt: skip
        quick = (0.0001, 0.001)
        self.runme((5, 60), 211, "running Execute in runnerService", _id=run_id)
        self.runme((0.005, 0.03), 232, "received initial request", **ids, req=req)
        self.runme((0.05, 3), 496, "command finished", **ids, exitCode=exit_code)
        self.runme(quick, 509, "command was finalized successfully", **ids)
        self.runme(quick, 538, END_RUNME, **ids, exitCode=exit_code)
        self.runme(quick, 391, "stream canceled after the process finished; ignoring",
                   RUNNER_FN + ".func5", **ids)  # fmt: skip

    def foyle_execute(self, block: dict[str, Any], contents: str) -> None:
        ev, trace_id = self.eval_field(), _hex(self.rng, 128)
        self.s.trace_ids.append(trace_id)
        request = {"block": _block("CODE", contents, block["id"], "bash")}
        self.foyle((5, 60), "executor/executor.go:43", EXECUTE_FN, "Executor.Execute", **ev,
                   traceId=trace_id, blockId=block["id"], request=request)  # fmt: skip
        item = {"mime": "text/plain", "text_data": f"exitCode: {self.rng.choice((0, 0, 1))}"}
        self.foyle((0.1, 5), "executor/executor.go:61", EXECUTE_FN, "Executed instructions", **ev,
                   traceId=trace_id, response={"outputs": [{"items": [item]}]})  # fmt: skip

    def noise(self) -> None:
        """A line with no trace id: RunMe saving the notebook or a Foyle streaming request."""
        if self.rng.random() < 0.5:
            line = _runme(self._tick((0.1, 2)), EDITOR_CALLER, SERIALIZE_FN, "Serialize")
            self.s.lines.append((RUNME, line))
        else:
            self.foyle((0.1, 2), "agent/agent.go:170", STREAM_FN,
                       "Agent.StreamGenerate: received request", streamTraceId=_hex(self.rng, 128))  # fmt: skip

    def executions(self, blocks: list[dict[str, Any]]) -> None:
        rng = self.rng
        for block in (b for b in blocks if b["kind"] == "CODE"):
            if rng.random() >= 0.6:
                continue
            contents = block["contents"]
            if rng.random() < self.edit_rate:
                if rng.random() < 0.5:  # the suggestion failed as is, then the fix ran
                    self.execute_once(block, contents)
                contents = self.edited(contents)
                self.s.edited_block_ids.append(block["id"])
            self.execute_once(block, contents)
            self.s.executed_block_ids.append(block["id"])

    def execute_once(self, block: dict[str, Any], contents: str) -> None:
        if self.s.eval_mode or self.rng.random() < 0.2:
            self.foyle_execute(block, contents)
            return
        if self.streaming:  # Foyle v0.0.37+: every execution, with its status
            cell = {**block, "contents": contents}
            status = "SUCCEEDED" if self.rng.random() < 0.8 else "FAILED"
            self.log_event("EXECUTE", cell, [cell], executeStatus=status)
        elif self.rng.random() < 0.3:  # vscode reports the execution as well
            cell = {**block, "contents": contents}
            self.log_event("EXECUTE", cell, [cell])
        self.runme_execute(block, contents)


def build_session(
    rng: random.Random,
    t0: float,
    *,
    eval_mode: bool | None = None,
    edit_rate: float = 0.3,
    streaming: bool = False,
) -> Session:
    """One session starting after time `t0`; eval mode drawn (5%) unless given."""
    if eval_mode is None:
        eval_mode = rng.random() < 0.05
    b = _SessionBuilder(rng, t0, eval_mode, edit_rate, streaming)
    if rng.random() < 0.5:
        b.noise()
    if streaming:
        b.log_event("SESSION_START", None, [])
    blocks = b.generate()
    if not eval_mode and rng.random() < 0.3:
        code = [x for x in blocks if x["kind"] == "CODE"]
        b.log_event(rng.choice(("ACCEPTED", "ACCEPTED", "REJECTED")), rng.choice(code), blocks)
    b.executions(blocks)
    if streaming and rng.random() >= 0.1:  # else the window closed: no SESSION_END
        b.log_event("SESSION_END", None, [])
    if eval_mode:
        b.s.edited_block_ids.clear()  # eval-mode executions are never learnable
    return b.s


def session_lines(
    rng: random.Random, t0: float, *, eval_mode: bool | None = None, edit_rate: float = 0.3
) -> list[tuple[str, bytes]]:
    """The (file role, line) pairs of one session: roles FOYLE or RUNME, lines end in b"\\n"."""
    return build_session(rng, t0, eval_mode=eval_mode, edit_rate=edit_rate).lines


def _drain(b: _SessionBuilder) -> list[tuple[str, bytes]]:
    """The lines built since the last drain: long shapes are written as they are built."""
    lines, b.s.lines = b.s.lines, []
    return lines


def fan_in_lines(rng: random.Random, t0: float, executions: int) -> Iterator[tuple[str, bytes]]:
    """One Generate trace, then its first code block run `executions` times (issue 13: a
    cell re-run over and over), each run one RunMe (80 %) or Executor trace and nothing else."""
    b = _SessionBuilder(rng, t0, eval_mode=False, edit_rate=0.0)
    block = next(x for x in b.generate() if x["kind"] == "CODE")
    for _ in range(executions):
        yield from _drain(b)
        run = b.runme_execute if rng.random() < 0.8 else b.foyle_execute
        run(block, block["contents"])
    yield from _drain(b)


def fan_out_lines(rng: random.Random, t0: float, blocks: int) -> Iterator[tuple[str, bytes]]:
    """One Generate trace whose response has `blocks` blocks (prose and code alternating)."""
    b = _SessionBuilder(rng, t0, eval_mode=False, edit_rate=0.0)
    b.generate(pairs=max(1, blocks // 2))
    yield from _drain(b)


def write_lines(out_dir: Path, lines: Iterable[tuple[str, bytes]], t0: float) -> GenStats:
    """Write (role, line) pairs as one Foyle server's file and one RunMe server's file."""
    stats = GenStats()
    writers = _Writers(stats)
    out_dir = Path(out_dir)
    try:
        runme = out_dir / RUNME / f"logs.{_stamp(t0)}.json"
        files = {
            RUNME: writers.open(
                runme, runme_startup(t0, f"/home/user/.config/runme/logs/{runme.name}")
            ),
            FOYLE: writers.open(
                out_dir / FOYLE / f"foyle.logs.{_stamp(t0)}.json",
                foyle_startup(random.Random(0), t0),
            ),
        }
        for role, line in lines:
            writers.write(files[role], line)
    finally:
        writers.close()
    return stats


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def foyle_startup(rng: random.Random, t: float) -> list[bytes]:
    """The lines a Foyle server writes when it starts (no trace ids)."""
    app = f"{FOYLE_PKG}/application.(*App).SetupOTEL"
    server = f"{FOYLE_PKG}/server.(*Server).createGinEngine"
    lines = [
        _foyle(t, "application/app.go:79", app, "Using default tracer provider"),
        _foyle(
            t + 0.0008,
            "agent/agent.go:48",
            f"{FOYLE_PKG}/agent.NewAgent",
            "Creating agent",
            config={"model": "gpt-3.5-turbo-0125"},
        ),
        _foyle(t + 0.001, "server/server.go:95", server, "Setting up server"),
    ]
    for i, ext in enumerate(rng.sample(EXTENSIONS, 4)):
        lines.append(
            _foyle(
                t + 0.0015 + i * 1e-5,
                "server/extensions.go:44",
                f"{FOYLE_PKG}/server.findExtensionsInDir",
                "Found extension",
                dir=f"/home/user/.foyle/assets/vscode/extensions/{ext}",
            )
        )
    return lines


def runme_startup(t: float, log_file: str) -> list[bytes]:
    """The lines a RunMe server writes when it starts (no trace ids)."""
    return [
        _runme(
            t,
            "cmd/common.go:190",
            f"{RUNME_PKG}/cmd.getLogger",
            "Logger initialized",
            devMode=False,
            aiLogs=True,
            logFile=log_file,
        ),
        _runme(
            t + 0.001,
            "cmd/server.go:99",
            f"{RUNME_PKG}/cmd.serverCmd.func2",
            "started listening",
            addr="127.0.0.1:7863",
        ),
    ]


def _bad_line(rng: random.Random, good: bytes) -> bytes:
    """Invalid JSON: a line cut short (a crashed writer) or a Go panic message."""
    if rng.random() < 0.5:
        return good[: max(1, len(good) // 2)].rstrip(b"\n") + b"\n"
    return b"panic: runtime error: invalid memory address or nil pointer dereference\n"


class _Writers:
    """Open files of a corpus being generated, with their byte and line counts."""

    def __init__(self, stats: GenStats) -> None:
        self.stats = stats
        self.handles: dict[Path, Any] = {}

    def open(self, path: Path, header: list[bytes]) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handles[path] = open(path, "wb", buffering=1 << 20)  # noqa: SIM115
        self.stats.files.append(path)
        for line in header:
            self.write(path, line)
        return path

    def write(self, path: Path, line: bytes) -> None:
        self.handles[path].write(line)
        self.stats.bytes += len(line)
        self.stats.lines += 1

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


def generate(
    out_dir: Path,
    *,
    size_bytes: int,
    seed: int = 0,
    foyle_files: int = 2,
    runme_files: int = 2,
    bad_lines: int = 0,
    t0: float = 1_713_300_000.0,
    streaming: bool = False,
) -> GenStats:
    """Write a corpus of about `size_bytes` (one session over at most) into out_dir/{foyle,runme}."""
    rng = random.Random(seed)
    stats = GenStats()
    writers = _Writers(stats)
    out_dir = Path(out_dir)
    t = t0
    runme: list[Path] = []
    for i in range(runme_files):
        path = out_dir / RUNME / f"logs.{_stamp(t0 + i)}.json"
        runme.append(
            writers.open(path, runme_startup(t0 + i, f"/home/user/.config/runme/logs/{path.name}"))
        )
    foyle: Path | None = None
    foyle_index = -1
    try:
        while stats.bytes < size_bytes:
            wanted = min(foyle_files - 1, stats.bytes * foyle_files // max(size_bytes, 1))
            if wanted != foyle_index:  # a Foyle server (re)start: a new file
                foyle_index, t = wanted, t + 60
                path = out_dir / FOYLE / f"foyle.logs.{_stamp(t)}.json"
                foyle = writers.open(path, foyle_startup(rng, t))
            assert foyle is not None
            session = build_session(rng, t, streaming=streaming)
            runme_file = rng.choice(runme) if runme else foyle
            for role, line in session.lines:
                target = runme_file if role == RUNME else foyle
                if stats.bad_lines < bad_lines and stats.bytes * bad_lines >= (
                    size_bytes * (2 * stats.bad_lines + 1) // 2
                ):
                    writers.write(target, _bad_line(rng, line))
                    stats.bad_lines += 1
                writers.write(target, line)
            _count(stats, session)
            t = session.end_time + rng.uniform(1, 120)
        while stats.bad_lines < bad_lines:  # a tiny size: put the rest at the end
            writers.write(rng.choice(stats.files), _bad_line(rng, b'{"severity":"info"}\n'))
            stats.bad_lines += 1
    finally:
        writers.close()
    stats.end_time = t
    return stats


def _count(stats: GenStats, session: Session) -> None:
    stats.sessions += 1
    stats.eval_sessions += session.eval_mode
    stats.generated_blocks += len(session.block_ids)
    stats.executed_blocks += len(set(session.executed_block_ids))
    stats.edited_blocks += len(set(session.edited_block_ids))
    stats.end_time = session.end_time


@dataclass
class Appended:
    """What one `Appender.append` wrote; times are `time.time()` right after the write."""

    session: Session
    gen_end_written: float  # after the Generate trace's end line
    end_written: float  # after the session's last line


class Appender:
    """Appends whole sessions, line by line, to the newest Foyle file and the RunMe files.

    Each line is one `os.write` on an O_APPEND descriptor, as the Go servers
    write, so a reader in another process never sees a half-line for long.
    Line times continue from `t0` (default: now).
    """

    def __init__(self, out_dir: Path, *, seed: int = 1, t0: float | None = None) -> None:
        out_dir = Path(out_dir)
        foyle = sorted((out_dir / FOYLE).glob("foyle.logs.*.json"))
        runme = sorted((out_dir / RUNME).glob("logs.*.json"))
        if not foyle:
            raise FileNotFoundError(f"no foyle.logs.*.json under {out_dir / FOYLE}")
        self.rng = random.Random(seed)
        self.t = time.time() if t0 is None else t0
        self.foyle_fd = os.open(foyle[-1], os.O_WRONLY | os.O_APPEND)
        self.runme_fds = [os.open(p, os.O_WRONLY | os.O_APPEND) for p in runme]

    def append(
        self, *, eval_mode: bool | None = False, edit_rate: float = 0.3, streaming: bool = False
    ) -> Appended:
        """Write one session (not in eval mode unless asked) and say what it produced."""
        session = build_session(
            self.rng, self.t, eval_mode=eval_mode, edit_rate=edit_rate, streaming=streaming
        )
        runme_fd = self.rng.choice(self.runme_fds) if self.runme_fds else self.foyle_fd
        gen_end_written = 0.0
        for role, line in session.lines:
            os.write(runme_fd if role == RUNME else self.foyle_fd, line)
            if role == FOYLE and b'"' + GENERATE_END.encode() + b'"' in line:
                gen_end_written = time.time()
        self.t = session.end_time + self.rng.uniform(1, 10)
        return Appended(session, gen_end_written, time.time())

    def close(self) -> None:
        for fd in (self.foyle_fd, *self.runme_fds):
            os.close(fd)

    def __enter__(self) -> Appender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_UNITS = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}


def parse_size(text: str) -> int:
    """'100MB' -> bytes (KB/MB/GB are powers of 1024; a bare number is bytes)."""
    text = text.strip().upper()
    number = text.rstrip("KMGB")
    unit = text[len(number) :]
    if unit not in _UNITS or not number:
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use e.g. 500KB, 100MB, 1GB")
    return int(float(number) * _UNITS[unit])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", type=parse_size, default=parse_size("10MB"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--foyle-files", type=int, default=2)
    parser.add_argument("--runme-files", type=int, default=2)
    parser.add_argument("--bad-lines", type=int, default=0)
    parser.add_argument(
        "--streaming", action="store_true", help="sessions as Foyle v0.0.37+ logs them"
    )
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument(
        "--fan-in", type=int, metavar="N", help="instead: one block executed N times (issue 13)"
    )
    shape.add_argument(
        "--fan-out", type=int, metavar="N", help="instead: one Generate trace with N blocks"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rng, t0 = random.Random(args.seed), 1_713_300_000.0
    if args.fan_in is not None:
        stats = write_lines(args.out_dir, fan_in_lines(rng, t0, args.fan_in), t0)
    elif args.fan_out is not None:
        stats = write_lines(args.out_dir, fan_out_lines(rng, t0, args.fan_out), t0)
    else:
        stats = generate(
            args.out_dir,
            size_bytes=args.size,
            seed=args.seed,
            foyle_files=args.foyle_files,
            runme_files=args.runme_files,
            bad_lines=args.bad_lines,
            streaming=args.streaming,
        )
    elapsed = time.perf_counter() - start
    print(
        f"{stats.bytes / 1e6:.1f} MB, {stats.lines} lines, {stats.sessions} sessions,"
        f" {len(stats.files)} files in {elapsed:.1f}s ({stats.bytes / 1e6 / elapsed:.0f} MB/s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
