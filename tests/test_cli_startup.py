"""What a command imports before it works: start-up is paid by every `foylectl` process.

A 10 MB `analyze` takes about 2 s, of which the interpreter's start and the imports
were 0.27 s (issue 23); `foylectl get` is typed many times. Each library below was
imported by every command and is needed by few.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.cli_helpers import foylectl

REPO = Path(__file__).resolve().parent.parent

# Runs `main(argv)` in a fresh interpreter, then prints which of the libraries it imported.
PROBE = """
import json, sys
from controller.cli.main import main
code = main(sys.argv[1:])
watched = ("watchdog", "importlib.metadata", "kopf", "kubernetes")
print(json.dumps({"code": code, "imported": [m for m in watched if m in sys.modules]}))
"""


def imported_by(*argv: str | Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, argv)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_analyze_imports_neither_the_watcher_nor_the_package_metadata(tmp_path: Path) -> None:
    logs, state = tmp_path / "logs", tmp_path / "state"
    logs.mkdir()
    (logs / "foyle.json").write_text('{"time": 1, "traceId": "t", "message": "m"}\n')
    probe = imported_by(
        "analyze", "--logs", logs, "--state-dir", state, "--no-learn", "--no-progress"
    )
    assert probe == {"code": 0, "imported": []}


def test_the_help_reads_no_package_metadata_and_version_still_does() -> None:
    assert imported_by() == {"code": 0, "imported": []}  # no arguments: the help
    assert foylectl("--version").stdout.strip() == "foylectl 0.1.0"
