"""Foyle's function-name matchers (matchers/names.go, v0.0.45) against the names Go really gives.

Each row is one name Go's runtime reports for code in Foyle's (or RunMe's)
source at v0.0.45, and whether Foyle's `strings.HasPrefix` matcher accepts
it. Go's naming: `pkg.(*T).M` for a pointer receiver, `pkg.T.M` for a value
receiver, `.funcN` for the N-th closure of a function and `.funcN.M` for a
closure inside it, `-fm` for a method value, `[...]` for a generic
instantiation. The names are real: e.g. "Received full context" (agent.go:400)
is logged from `isValidErr`, the second closure inside StreamGenerate's second
closure, so `StreamGenerate.func2.2`; LogEvents logs from the closure in its
loop, `LogEvents.func1`.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from controller.analyze.traces import classify
from controller.api import functions

AGENT = "github.com/jlewi/foyle/app/pkg/agent"
RUNNER = "github.com/stateful/runme/v3/internal/runner"

Matcher = Callable[[str], bool]
TABLE: list[tuple[Matcher, str, bool]] = [
    # IsLogEvent
    (functions.is_log_event, f"{AGENT}.(*Agent).LogEvents", True),
    (functions.is_log_event, f"{AGENT}.(*Agent).LogEvents.func1", True),
    (functions.is_log_event, f"{AGENT}.(*Agent).LogEvents-fm", True),
    (functions.is_log_event, f"{AGENT}.Agent.LogEvents", False),  # a value receiver
    (functions.is_log_event, "x/agent.(*Agent).LogEvents.func1", False),  # another module
    # IsStreamGenerate
    (functions.is_stream_generate, f"{AGENT}.(*Agent).StreamGenerate", True),
    (functions.is_stream_generate, f"{AGENT}.(*Agent).StreamGenerate.func1", True),
    (functions.is_stream_generate, f"{AGENT}.(*Agent).StreamGenerate.func2", True),
    (functions.is_stream_generate, f"{AGENT}.(*Agent).StreamGenerate.func2.2", True),
    (functions.is_stream_generate, f"{AGENT}.(*Agent).StreamGenerate.func1.1.3", True),
    (functions.is_stream_generate, f"{AGENT}.(*Agent).Generate", False),
    # IsGenerate: a prefix, so GenerateCells (which calls Generate in its trace) matches too
    (functions.is_generate, f"{AGENT}.(*Agent).Generate", True),
    (functions.is_generate, f"{AGENT}.(*Agent).Generate.func1", True),
    (functions.is_generate, f"{AGENT}.(*Agent).GenerateCells", True),
    (functions.is_generate, f"{AGENT}.(*Agent).StreamGenerate", False),
    (functions.is_generate, f"{AGENT}.(*Agent).completeWithRetries", False),
    # IsLLMUsage
    (functions.is_llm_usage, "github.com/jlewi/foyle/app/pkg/logs.LogLLMUsage", True),
    (functions.is_llm_usage, "github.com/jlewi/foyle/app/pkg/logs.LogLLMUsage[...]", True),
    (functions.is_llm_usage, "github.com/jlewi/foyle/app/pkg/logs.LogLLMUsage.func1", True),
    (functions.is_llm_usage, "github.com/jlewi/foyle/app/pkg/logs.FromContext", False),
    # Foyle's executor and RunMe's runner, matched the same way
    (
        functions.is_executor_execute,
        "github.com/jlewi/foyle/app/pkg/executor.(*Executor).Execute",
        True,
    ),
    (functions.is_runme_execute, f"{RUNNER}.(*runnerService).Execute", True),
    (functions.is_runme_execute, f"{RUNNER}.(*runnerService).Execute.func5", True),
    (functions.is_runme_execute, f"{RUNNER}.(*runnerService).Execute.func1.2", True),
    (functions.is_runme_execute, f"{RUNNER}.(*runnerService).ResolveProgram", False),
    (functions.is_runme_execute, f"{RUNNER}.(*runnerService[...]).Execute", False),  # generic
]


@pytest.mark.parametrize(("matcher", "function", "expected"), TABLE)
def test_each_matcher_accepts_the_names_go_gives_by_prefix(
    matcher: Matcher, function: str, expected: bool
) -> None:
    assert matcher(function) is expected


@pytest.mark.parametrize(
    ("function", "kind"),
    [
        (f"{AGENT}.(*Agent).LogEvents.func1", "LogEvent"),
        (f"{AGENT}.(*Agent).StreamGenerate.func2.2", "Context"),
        (f"{AGENT}.(*Agent).GenerateCells", "Generate"),
        ("github.com/jlewi/foyle/app/pkg/logs.LogLLMUsage", "Generate"),
        (f"{RUNNER}.(*runnerService).Execute.func1.2", "RunMe"),
        (f"{AGENT}.Agent.LogEvents", None),
        (f"{AGENT}.NewAgent", None),
    ],
)
def test_a_line_is_classified_by_the_matcher_foyle_would_use(function: str, kind: str) -> None:
    assert classify(function) == kind
