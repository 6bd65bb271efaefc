"""Which Go function logged a line: Foyle's matchers, applied the way Foyle applies them.

Foyle decides what a log line is by its `function` key, with
`strings.HasPrefix` against full Go names (`app/pkg/logs/matchers/names.go`,
v0.0.45). A prefix, not an exact name or a suffix, because Go names the
closures a method logs from after the method: `LogEvents.func1` (a closure),
`StreamGenerate.func2.2` (a closure inside a closure: where "Received full
context" is logged). Go's other names follow the same scheme: a method on a
pointer receiver is `pkg.(*T).M`, on a value receiver `pkg.T.M` (which
Foyle's `(*Agent)` prefixes do not match), a generic instantiation
`pkg.(*T[...]).M`, and a method value adds `-fm`.

A prefix also matches the methods whose names extend it (`Generate` matches
`GenerateCells`); Foyle accepts that, so this does too. The executor's and
RunMe's runner are not in Foyle v0.0.45's matchers (older Foyle learned from
them); they are matched the same way, by the full name of the method.
Shared by `logs` (which lines carry a LogEvent) and `analyze` (a trace's kind).
"""

from __future__ import annotations

FOYLE_PKG = "github.com/jlewi/foyle/app/pkg"
RUNME_RUNNER = "github.com/stateful/runme/v3/internal/runner"

# matchers/names.go, v0.0.45 (its OAI and Anthropic Complete matchers pick LLM spans: unused here)
LOG_EVENTS = f"{FOYLE_PKG}/agent.(*Agent).LogEvents"
STREAM_GENERATE = f"{FOYLE_PKG}/agent.(*Agent).StreamGenerate"
GENERATE = f"{FOYLE_PKG}/agent.(*Agent).Generate"
LLM_USAGE = f"{FOYLE_PKG}/logs.LogLLMUsage"
# not in names.go: Foyle's executor (before RunMe ran cells) and RunMe's runner
EXECUTOR_EXECUTE = f"{FOYLE_PKG}/executor.(*Executor).Execute"
RUNME_EXECUTE = f"{RUNME_RUNNER}.(*runnerService).Execute"


def is_log_event(function: str) -> bool:
    return function.startswith(LOG_EVENTS)


def is_stream_generate(function: str) -> bool:
    return function.startswith(STREAM_GENERATE)


def is_generate(function: str) -> bool:
    return function.startswith(GENERATE)


def is_llm_usage(function: str) -> bool:
    return function.startswith(LLM_USAGE)


def is_executor_execute(function: str) -> bool:
    return function.startswith(EXECUTOR_EXECUTE)


def is_runme_execute(function: str) -> bool:
    return function.startswith(RUNME_EXECUTE)
