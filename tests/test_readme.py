"""The README shows what the commands print (issue 22 item 7) and names every command.

Its example is run on the sample logs, as a new user would: the table (all
but AGE) and the timeline must be what `foylectl` prints today.
"""

from __future__ import annotations

import re
from pathlib import Path

from controller.cli.main import build_parser
from tests.cli_helpers import foylectl

README = Path(__file__).resolve().parent.parent / "README.md"
AGE = re.compile(r"\s+\d+[smhd]$")


def example_block() -> list[str]:
    text = README.read_text()
    start = text.index("```text\n$ foylectl run")
    return text[start:].split("```", 2)[1].splitlines()[1:]


def printed_after(block: list[str], command: str) -> list[str]:
    """The lines the README shows under `$ COMMAND`, up to the next `$` or `...`."""
    at = next(i for i, line in enumerate(block) if line.split("#")[0].strip() == f"$ {command}")
    out = []
    for line in block[at + 1 :]:
        if line.startswith(("$ ", "...")):
            break
        out.append(line)
    return out


def test_the_readme_example_prints_what_the_commands_print(tmp_path: Path, testdata: Path) -> None:
    state = tmp_path / "state"
    foylectl(
        "analyze", "--logs", testdata, "--state-dir", state, "--training-dir", tmp_path / "tr",
        "--no-progress",
    )  # fmt: skip
    block = example_block()
    table = printed_after(block, "foylectl get blocklogs")
    name = table[1].split()[0]
    printed = foylectl("get", "blocklogs", name, "--state-dir", state).stdout.splitlines()
    assert [AGE.sub("", line) for line in printed] == [AGE.sub("", line) for line in table]
    after = block[block.index("Timeline:") :]
    shown = after[: next(i for i, line in enumerate(after) if line.startswith("$ "))]
    described = foylectl("describe", "blocklog", name, "--state-dir", state).stdout
    assert described.splitlines()[-len(shown) :] == shown


def test_the_command_table_names_every_command() -> None:
    rows = re.findall(r"^\| `(\w+)[^`]*` \|", README.read_text(), re.MULTILINE)
    parser = build_parser()
    [commands] = [a for a in parser._actions if a.dest == "command"]
    assert sorted(rows) == sorted(commands.choices)  # type: ignore[arg-type]
