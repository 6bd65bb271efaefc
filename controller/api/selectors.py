"""Label selectors with kubectl's full syntax, and an error for anything else.

`a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x,y)`, joined by
commas. A malformed selector must be an error: read loosely, `env=prod=x`
or `env in prod` silently matched everything or nothing (issue 13). As in
Kubernetes, `!=` and `notin` also match objects without the label.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_KEY = rf"(?:[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/)?{_NAME}"
_TERM = re.compile(
    rf"""\s*(?:
        !\s*(?P<absent>{_KEY})
      | (?P<key>{_KEY})(?:
            \s*(?P<op>==|=|!=)\s*(?P<value>{_NAME})?
          | \s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\)
        )?
    )\s*(?:,|$)""",
    re.VERBOSE,
)
_VALUE = re.compile(rf"^{_NAME}$")
MAX_NAME = 63


class InvalidSelector(ValueError):
    """A label selector that does not parse: the message says where."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # = != in notin exists !exists
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        inside = present and labels[self.key] in self.values
        return inside if self.op in ("=", "in") else not inside


@dataclass(frozen=True)
class Selector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


@functools.lru_cache(maxsize=64)  # a store's list matches every object against one selector
def parse_selector(text: str | None) -> Selector:
    """The Selector of `text` (empty: everything), or InvalidSelector."""
    if not text or not text.strip():
        return Selector()
    if text.rstrip().endswith(","):
        raise InvalidSelector(f"invalid label selector {text!r}: ends with a comma")
    requirements = []
    pos = 0
    while pos < len(text):
        match = _TERM.match(text, pos)
        if match is None or match.end() == pos:
            raise InvalidSelector(
                f"invalid label selector {text!r}: cannot parse {text[pos:]!r}"
                " (want key, !key, key=value, key!=value, key in (a,b), key notin (a,b))"
            )
        requirements.append(_requirement(text, match))
        pos = match.end()
    return Selector(tuple(requirements))


def _requirement(text: str, match: re.Match[str]) -> Requirement:
    if match["absent"]:
        return Requirement(_checked_key(text, match["absent"]), "!exists")
    key = _checked_key(text, match["key"])
    if match["op"]:
        value = match["value"] or ""
        return Requirement(
            key, "!=" if match["op"] == "!=" else "=", frozenset([_checked(text, value)])
        )
    if match["setop"]:
        values = [v.strip() for v in match["values"].split(",")]
        if not all(values) or not all(_VALUE.match(v) for v in values):
            raise InvalidSelector(
                f"invalid label selector {text!r}: {match['setop']} wants (value, ...)"
                f" of label values, not ({match['values']})"
            )
        return Requirement(key, match["setop"], frozenset(_checked(text, v) for v in values))
    return Requirement(key, "exists")


def _checked_key(text: str, key: str) -> str:
    _checked(text, key.rpartition("/")[2])
    return key


def _checked(text: str, name: str) -> str:
    if len(name) > MAX_NAME:
        raise InvalidSelector(
            f"invalid label selector {text!r}: {name[:20]!r}... is over 63 characters"
        )
    return name
