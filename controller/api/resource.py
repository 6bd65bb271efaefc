"""Building and reading Kubernetes-shaped resource dicts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from controller.api.kinds import API_VERSION, BY_KIND, Resource
from controller.api.names import name_for_id


def rfc3339(epoch_seconds: float) -> str:
    """RFC 3339 UTC with microseconds, e.g. 2024-04-16T19:06:47.950103Z."""
    text = datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="microseconds")
    return text[:-6] + "Z"  # "+00:00" -> "Z"


def rfc3339_seconds(epoch_seconds: float) -> str:
    """RFC 3339 UTC to the second, as Kubernetes writes creationTimestamp."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def new_resource(
    kind: str,
    raw_id: str,
    spec: dict[str, Any],
    status: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    name: str | None = None,
) -> Resource:
    """A fresh resource of `kind`; its name is derived from `raw_id` unless given."""
    if kind not in BY_KIND:
        raise ValueError(f"unknown kind {kind!r}")
    metadata: dict[str, Any] = {"name": name or name_for_id(raw_id)}
    if labels:
        metadata["labels"] = dict(labels)
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": metadata,
        "spec": dict(spec),
        "status": dict(status or {}),
    }


def name_of(obj: Resource) -> str:
    return str(obj["metadata"]["name"])


def get_path(obj: Any, json_path: str) -> Any:
    """Evaluate a simple `.a.b.c` JSON path; None where any step is missing."""
    cur = obj
    for part in json_path.strip(".").split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur
