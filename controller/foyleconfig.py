"""Foyle's own configuration file, read for what the controller needs from it.

A Foyle user already told Foyle where its key file, training directories and
logs are (`~/.foyle/config.yaml`, written by `foyle config set`). Reading the
same file means training files land where Foyle loads them, with the
embeddings its loader requires, and no flag has to repeat what the config
says. Flags still override (the caller applies them after this).

What is read, and the defaults, as Foyle's `app/pkg/config` (v0.0.45, commit
4c7f07f) computes them:

* `learner.exampleDirs`: the training directories; default
  `<config dir>/training`. Non-local URIs (`gs://...`) are reported and left
  out: this controller writes local files only.
* `logging.logDir`: Foyle's log directory (default `<config dir>/logs`); its
  raw logs are in `<logDir>/raw`. `learner.logDirs`: RunMe's log directories.
* `azureOpenAI` (when present Foyle uses it instead of `openai`):
  `apiKeyFile`, `baseURL`, and `deployments[]` mapping a `model` to a
  `deployment`; embeddings need one for `text-embedding-3-small`.
* `openai.apiKeyFile` and `openai.baseURL` (Foyle accepts a custom base URL
  without a key).

A missing file is not an error (Foyle runs on defaults too); a file that is
not YAML, or holds the wrong types, is one clear `FoyleConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EMBEDDING_MODEL = "text-embedding-3-small"  # openai.SmallEmbedding3, Foyle's only vectorizer


def default_path() -> Path:
    return Path.home() / ".foyle" / "config.yaml"


class FoyleConfigError(ValueError):
    """Foyle's config file exists but cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Provider:
    """Where embeddings come from: OpenAI (or a compatible base URL) or Azure OpenAI."""

    kind: str  # "openai" | "azure"
    api_key_file: Path | None
    base_url: str = ""
    deployment: str = ""  # Azure: the deployment serving EMBEDDING_MODEL


@dataclass(frozen=True)
class FoyleConfig:
    path: Path
    found: bool
    training_dirs: tuple[Path, ...]
    log_dirs: tuple[Path, ...]  # Foyle's raw log dir, then learner.logDirs
    provider: Provider | None
    notes: tuple[str, ...] = field(default=())  # what was left out, and why


def load(path: Path | None = None) -> FoyleConfig:
    """Foyle's config at `path` (default ~/.foyle/config.yaml), or its defaults when absent."""
    path = Path(path).expanduser() if path else default_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return _from_mapping(path, {}, found=False)
    except OSError as err:
        raise FoyleConfigError(f"cannot read Foyle's config {path}: {err.strerror}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise FoyleConfigError(f"Foyle's config {path} is not YAML: {_first_line(err)}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FoyleConfigError(f"Foyle's config {path} is not a YAML mapping")
    return _from_mapping(path, data, found=True)


def _from_mapping(path: Path, data: dict[str, Any], *, found: bool) -> FoyleConfig:
    where = _Reader(path, data)
    config_dir = path.parent
    notes: list[str] = []
    training: list[Path] = []
    for d in where.strings("learner", "exampleDirs"):
        if "://" in d:
            notes.append(f"learner.exampleDirs: {d} is not a local directory; not written")
        else:
            training.append(Path(d).expanduser())
    if not where.strings("learner", "exampleDirs"):
        training = [config_dir / "training"]
    log_dir = where.string("logging", "logDir") or str(config_dir / "logs")
    logs = [Path(log_dir).expanduser() / "raw"]
    logs += [Path(d).expanduser() for d in where.strings("learner", "logDirs")]
    return FoyleConfig(
        path=path,
        found=found,
        training_dirs=tuple(training),
        log_dirs=tuple(dict.fromkeys(logs)),
        provider=_provider(where, notes),
        notes=tuple(notes),
    )


def _provider(where: _Reader, notes: list[str]) -> Provider | None:
    if where.mapping("azureOpenAI") is not None:
        deployments = where.list("azureOpenAI", "deployments")
        deployment = next(
            (
                str(d.get("deployment") or "")
                for d in deployments
                if isinstance(d, dict) and d.get("model") == EMBEDDING_MODEL
            ),
            "",
        )
        if not deployment:
            notes.append(f"azureOpenAI.deployments has no deployment for {EMBEDDING_MODEL}")
            return None
        key = where.string("azureOpenAI", "apiKeyFile")
        return Provider(
            "azure",
            Path(key).expanduser() if key else None,
            where.string("azureOpenAI", "baseURL"),
            deployment,
        )
    key = where.string("openai", "apiKeyFile")
    base_url = where.string("openai", "baseURL")
    if not key and not base_url:
        return None
    return Provider("openai", Path(key).expanduser() if key else None, base_url)


@dataclass(frozen=True)
class _Reader:
    """Typed look-ups of `section.key`: a wrong type names the key instead of crashing."""

    path: Path
    data: dict[str, Any]

    def mapping(self, section: str) -> dict[str, Any] | None:
        value = self.data.get(section)
        if value is None or isinstance(value, dict):
            return value
        raise FoyleConfigError(f"Foyle's config {self.path}: {section} is not a mapping")

    def _value(self, section: str, key: str) -> Any:
        return (self.mapping(section) or {}).get(key)

    def string(self, section: str, key: str) -> str:
        value = self._value(section, key)
        if value is None or isinstance(value, str):
            return value or ""
        raise FoyleConfigError(f"Foyle's config {self.path}: {section}.{key} is not a string")

    def list(self, section: str, key: str) -> list[Any]:
        value = self._value(section, key)
        if value is None or isinstance(value, list):
            return value or []
        raise FoyleConfigError(f"Foyle's config {self.path}: {section}.{key} is not a list")

    def strings(self, section: str, key: str) -> list[str]:
        values = self.list(section, key)
        if all(isinstance(v, str) for v in values):
            return [v for v in values if v]
        raise FoyleConfigError(f"Foyle's config {self.path}: {section}.{key} holds a non-string")


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
