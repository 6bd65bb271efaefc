"""README "With `foyle serve`": foylectl beside both kinds of Foyle, in one training directory.

Foyle up to v0.0.36 learns only when `foyle learn` runs (from BlockLogs);
Foyle v0.0.37 and later runs its own session learner inside `foyle serve`,
writing `<context id>.example.binpb` into `learner.exampleDirs` as it reads
each SESSION_END. Whatever runs, the directory must hold one file per Example
id, every file Foyle would load: Foyle's learners name a file after its id, so
foylectl does too, and the same Example is one file whoever wrote it last.
Foyle's in-process learner is played by hack/foyle_reference.py (Foyle's rules
over the same lines), writing what Foyle writes: the Example with the
embedding of its query.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, serve, vector_for
from foyle_wire import DIMENSIONS, decode, load_rules

from controller.learn.foyle_pb import example_to_proto
from controller.learn.query import blocks_to_markdown
from controller.learn.rule import learnability
from tests.cli_helpers import foylectl, get_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))

from foyle_reference import run_foyle  # noqa: E402
from gen_logs import generate  # noqa: E402

SUFFIX = ".example.binpb"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with serve(dims=DIMENSIONS) as server:
        yield server


def corpus(tmp_path: Path, streaming: bool) -> Path:
    logs = tmp_path / "logs"
    generate(logs, size_bytes=200_000, seed=21, streaming=streaming)
    return logs


def foylectl_analyze(logs: Path, work: Path, fake: FakeOpenAI, *flags: str) -> Path:
    """`foylectl analyze` with Foyle's config: its key, its exampleDirs (work/training)."""
    key = work / "openai.key"
    key.write_text("sk-test\n")
    config = work / "config.yaml"
    config.write_text(
        f"openai: {{apiKeyFile: {key}, baseURL: {fake.url}}}\n"
        f"learner: {{exampleDirs: [{work / 'training'}]}}\n"
    )
    state = work / "state"
    foylectl("analyze", "--logs", logs, "--state-dir", state, "--foyle-config", config,
             "--no-progress", *flags)  # fmt: skip
    return state


def foyle_learner_writes(logs: Path, training: Path) -> set[str]:
    """What `foyle serve` v0.0.37+ writes for these logs; the ids."""
    training.mkdir(parents=True, exist_ok=True)
    examples = run_foyle([logs]).examples
    for context_id, spec in examples.items():
        vector = vector_for(blocks_to_markdown(spec["query"]["blocks"]), DIMENSIONS)
        data = example_to_proto({"spec": spec}, vector)
        (training / f"{context_id}{SUFFIX}").write_bytes(data)
    assert examples, "the corpus must hold sessions Foyle learns"
    return set(examples)


def ids_per_file(training: Path) -> Counter[str]:
    """How many files in the directory hold each Example id, as Foyle's loader reads them."""
    report = load_rules([training])
    assert report.skipped == {}
    ids = Counter(decode(p.read_bytes())["id"] for p in training.glob("*" + SUFFIX))
    assert set(ids) == set(report.loaded)
    for path in training.glob("*" + SUFFIX):  # Foyle's learners' own name for each file
        assert path.name == decode(path.read_bytes())["id"] + SUFFIX
    return ids


def blocklog_ids(state: Path) -> set[str]:
    return {b["spec"]["id"] for b in get_json(state, "blocklogs") if learnability(b)[0]}


def test_foyle_up_to_v0_0_36_loads_one_file_per_learnable_blocklog(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    """Foyle writes nothing while it serves; `foyle learn` would write these same paths."""
    state = foylectl_analyze(corpus(tmp_path, streaming=False), tmp_path, fake)
    ids = ids_per_file(tmp_path / "training")
    assert set(ids) == blocklog_ids(state) != set()
    assert set(ids.values()) == {1}


@pytest.mark.parametrize("foyle_first", [True, False])
def test_foyle_v0_0_37_and_foylectl_learning_sessions_too_write_each_example_once(
    fake: FakeOpenAI, tmp_path: Path, foyle_first: bool
) -> None:
    """The default `--learn-from both`: the same session Example is the same file."""
    logs, training = corpus(tmp_path, streaming=True), tmp_path / "training"
    foyles = foyle_learner_writes(logs, training) if foyle_first else set()
    state = foylectl_analyze(logs, tmp_path, fake)
    if not foyle_first:
        foyles = foyle_learner_writes(logs, training)
    ids = ids_per_file(training)
    assert set(ids.values()) == {1}, [i for i, n in ids.items() if n > 1]
    assert set(ids) == foyles | blocklog_ids(state)


def test_foyle_v0_0_37_with_foylectl_learning_blocklogs_only_share_no_id(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    """The README's advice beside Foyle v0.0.37+: its sessions to Foyle, BlockLogs to foylectl."""
    logs, training = corpus(tmp_path, streaming=True), tmp_path / "training"
    foyles = foyle_learner_writes(logs, training)
    state = foylectl_analyze(logs, tmp_path, fake, "--learn-from", "blocklogs")
    ids = ids_per_file(training)
    assert set(ids.values()) == {1}
    assert set(ids) == foyles | blocklog_ids(state)
    assert not foyles & blocklog_ids(state)


def test_the_readme_says_which_learner_to_run_beside_each_kind_of_foyle() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## With `foyle serve`\n", 1)[1].split("\n## ", 1)[0]
    for fact in ("v0.0.36", "v0.0.37", "--learn-from blocklogs", "restart", ".foylectl/",
                 "tests/test_foyle_serve.py", "No example is written twice"):  # fmt: skip
        assert fact in section, fact
