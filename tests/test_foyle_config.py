"""Foyle's config file is read by default for keys, URLs and directories; flags override it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_openai import serve

from controller.foyleconfig import FoyleConfigError, Provider, load
from controller.learn import foyle_pb
from tests.cli_helpers import foylectl, get_json


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_missing_config_gives_foyles_defaults_next_to_it(tmp_path: Path) -> None:
    config = load(tmp_path / "foyle" / "config.yaml")
    assert not config.found
    assert config.training_dirs == (tmp_path / "foyle" / "training",)
    assert config.log_dirs == (tmp_path / "foyle" / "logs" / "raw",)
    assert config.provider is None


def test_openai_key_base_url_and_directories_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.yaml",
        """apiVersion: foyle.io/v1alpha1
kind: Config
logging: {logDir: /var/foyle/logs, level: info}
openai: {apiKeyFile: /secrets/openai, baseURL: "http://127.0.0.1:1/v1"}
learner:
  exampleDirs: [/data/training, "gs://bucket/training"]
  logDirs: [/home/u/.config/runme/logs]
agent: {model: gpt-4o-mini}
""",
    )
    config = load(path)
    assert config.found
    assert config.training_dirs == (Path("/data/training"),)
    assert config.log_dirs == (Path("/var/foyle/logs/raw"), Path("/home/u/.config/runme/logs"))
    assert config.provider == Provider("openai", Path("/secrets/openai"), "http://127.0.0.1:1/v1")
    assert config.notes == (
        "learner.exampleDirs: gs://bucket/training is not a local directory; not written",
    )


def test_azure_wins_over_openai_and_needs_an_embeddings_deployment(tmp_path: Path) -> None:
    azure = """openai: {apiKeyFile: /k}
azureOpenAI:
  apiKeyFile: /az
  baseURL: https://example.openai.azure.com
  deployments:
    - {model: gpt-4o-mini, deployment: chat}
"""
    with_embeddings = azure + "    - {model: text-embedding-3-small, deployment: emb}\n"
    provider = load(write(tmp_path / "a.yaml", with_embeddings)).provider
    assert provider == Provider("azure", Path("/az"), "https://example.openai.azure.com", "emb")
    config = load(write(tmp_path / "b.yaml", azure))
    assert config.provider is None
    assert config.notes == ("azureOpenAI.deployments has no deployment for text-embedding-3-small",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("openai: [unclosed", "is not YAML"),
        ("- a list", "is not a YAML mapping"),
        ("openai: 3", "openai is not a mapping"),
        ("learner: {exampleDirs: /one/dir}", "learner.exampleDirs is not a list"),
        ("openai: {apiKeyFile: 7}", "openai.apiKeyFile is not a string"),
    ],
)
def test_a_bad_config_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(FoyleConfigError, match=message):
        load(write(tmp_path / "config.yaml", text))


def test_analyze_uses_foyles_key_file_base_url_and_example_dirs(
    testdata: Path, tmp_path: Path
) -> None:
    logs = testdata  # the shared samples: one learnable BlockLog (a fixed `curl`)
    key = write(tmp_path / "secrets" / "openai", "sk-from-foyle\n")
    training = tmp_path / "foyle-training"
    with serve(dims=1536) as fake:
        config = write(
            tmp_path / "foyle" / "config.yaml",
            f"openai: {{apiKeyFile: {key}, baseURL: {fake.url}}}\n"
            f"learner: {{exampleDirs: [{training}]}}\n",
        )
        state = tmp_path / "state"
        out = foylectl("analyze", "--logs", logs, "--state-dir", state, "--foyle-config",
                       config, "--no-progress")  # fmt: skip
        assert "skip" not in out.stderr
        assert {r["headers"]["authorization"] for r in fake.requests} == {"Bearer sk-from-foyle"}
    [example] = get_json(state, "examples")
    assert example["status"]["foyleLoadable"] is True and "reason" not in example["status"]
    files = sorted(training.glob("*.example.binpb"))
    assert [str(f) for f in files] == example["status"]["trainingFiles"]
    assert len(foyle_pb.Example.FromString(files[0].read_bytes()).embedding) == 1536


def test_flags_override_foyles_config(testdata: Path, tmp_path: Path) -> None:
    logs = testdata  # the shared samples: one learnable BlockLog (a fixed `curl`)
    config = write(
        tmp_path / "config.yaml",
        f"openai: {{apiKeyFile: {tmp_path / 'absent-key'}}}\n"
        f"learner: {{exampleDirs: [{tmp_path / 'from-config'}]}}\n",
    )
    key = write(tmp_path / "key", "sk-flag")
    with serve(dims=1536) as fake:
        foylectl("analyze", "--logs", logs, "--state-dir", tmp_path / "state", "--foyle-config",
                 config, "--training-dir", tmp_path / "from-flag", "--openai-api-key-file", key,
                 "--openai-base-url", fake.url, "--no-progress")  # fmt: skip
        assert fake.requests
    assert not (tmp_path / "from-config").exists()
    assert len(list((tmp_path / "from-flag").glob("*.example.binpb"))) == 1


def test_without_a_provider_the_user_is_told_and_examples_say_why(
    testdata: Path, tmp_path: Path
) -> None:
    logs = testdata  # the shared samples: one learnable BlockLog (a fixed `curl`)
    state = tmp_path / "state"
    out = foylectl("analyze", "--logs", logs, "--state-dir", state, "--foyle-config",
                   tmp_path / "none.yaml", "--training-dir", tmp_path / "t", "--no-progress")  # fmt: skip
    assert "Foyle's agent will skip every one of them" in out.stderr
    assert "does not exist; using Foyle's defaults" in out.stderr
    [example] = get_json(state, "examples")
    assert (example["status"]["foyleLoadable"], example["status"]["reason"]) == (
        False,
        "NoEmbedding",
    )
    table = foylectl("get", "examples", "--state-dir", state).stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "BLOCKLOG", "FOYLE", "REASON"]
    assert table[1].split()[2:4] == ["false", "NoEmbedding"]


def test_a_broken_foyle_config_is_a_one_line_usage_error(tmp_path: Path) -> None:
    config = write(tmp_path / "config.yaml", "learner: {exampleDirs: 5}")
    proc = foylectl("learn", "--state-dir", tmp_path, "--foyle-config", config, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"foylectl: error: Foyle's config {config}: learner.exampleDirs is not a list"
    ]
