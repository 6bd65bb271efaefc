"""The part of kubectl's JSONPath that `-o jsonpath=`, `custom-columns` and `--sort-by` use.

Paths: `.a.b`, `['a.b']`, `[0]`, `[-1]`, `[*]`, `..name` (anywhere below),
filters `[?(@.a.b=="x")]` (==, !=, <, <=, >, >=, or `[?(@.a)]`: the field is there);
templates mix text with `{path}`, `{"literal\\n"}` and `{range path}...{end}`.
A path yields every value it reaches (none when a step is missing), the way
kubectl prints several matches joined by spaces.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from typing import Any

_NAME = r"""[^.\[\]{}()?@=!<>'"\s]+"""  # what a field name may hold
_STEP = re.compile(
    rf"""\.\.(?P<deep>{_NAME})
      | \.(?P<field>{_NAME})
      | \[\s*(?P<index>-?\d+)\s*\]
      | \[\s*\*\s*\]
      | \[\s*'(?P<quoted>[^']*)'\s*\]
      | \[\s*"(?P<dquoted>[^"]*)"\s*\]
      | \[\s*\?\((?P<filter>(?:[^()"']|"[^"]*"|'[^']*')*)\)\s*\]""",
    re.VERBOSE,
)
_FILTER = re.compile(
    r"""\s*(?P<left>@[^=!<>\s]*)\s*
        (?:(?P<op>==|!=|<=|>=|<|>)\s*
           (?P<right>"[^"]*"|'[^']*'|@[^=!<>\s]*|-?\d+(?:\.\d+)?|true|false|null)\s*)?$""",
    re.VERBOSE,
)
_COMPARE = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


class JSONPathError(ValueError):
    """A path or template that does not parse."""


Step = tuple[str, Any]  # ("field", name) | ("index", n) | ("all", None) | ("deep", name)
# | ("filter", (left path, op or None, right path or None, right literal))


@functools.lru_cache(maxsize=64)
def parse_path(path: str) -> tuple[Step, ...]:
    text = path.strip()
    if text.startswith("{") != text.endswith("}"):
        raise JSONPathError(f"invalid JSONPath {path!r}: unclosed action")
    if text.startswith("{"):
        text = text[1:-1].strip()
    text = text.removeprefix("$").removeprefix("@")
    if text and text[0] not in ".[":
        text = "." + text
    steps: list[Step] = []
    pos = 0
    while pos < len(text):
        match = _STEP.match(text, pos)
        if match is None:
            raise JSONPathError(f"invalid JSONPath {path!r}: cannot parse {text[pos:]!r}")
        if match["deep"] is not None:
            steps.append(("deep", match["deep"]))
        elif match["field"] is not None:
            steps.append(("field", match["field"]))
        elif match["index"] is not None:
            steps.append(("index", int(match["index"])))
        elif match["filter"] is not None:
            steps.append(("filter", _parse_filter(match["filter"], path)))
        elif match["quoted"] is not None or match["dquoted"] is not None:
            steps.append(
                ("field", match["quoted"] if match["quoted"] is not None else match["dquoted"])
            )
        else:
            steps.append(("all", None))
        pos = match.end()
    return tuple(steps)


def _parse_filter(text: str, path: str) -> tuple[Any, ...]:
    match = _FILTER.match(text)
    if match is None:
        raise JSONPathError(f"invalid JSONPath {path!r}: cannot parse the filter {text!r}")
    right = match["right"]
    if right is None or right.startswith("@"):
        return (match["left"], match["op"], right, None)
    return (match["left"], match["op"], None, json.loads(_double_quoted(right)))


def _double_quoted(literal: str) -> str:
    return '"' + literal[1:-1] + '"' if literal.startswith("'") else literal


def _passes(item: Any, condition: tuple[Any, ...]) -> bool:
    """Does a list item pass `[?(...)]`? Values of different types never compare."""
    left_path, op, right_path, literal = condition
    left = find(item, left_path)
    if op is None:
        return bool(left)
    right = find(item, right_path) if right_path else [literal]
    if not left or not right:
        return False
    a, b = left[0], right[0]
    if _number(a) and _number(b):
        return bool(_COMPARE[op](a, b))
    if type(a) is not type(b) or (op not in ("==", "!=") and not isinstance(a, str)):
        return bool(op == "!=")
    return bool(_COMPARE[op](a, b))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def find(obj: Any, path: str) -> list[Any]:
    """Every value `path` reaches in `obj`."""
    values = [obj]
    for kind, arg in parse_path(path):
        values = [found for value in values for found in _step(value, kind, arg)]
    return values


def _step(value: Any, kind: str, arg: Any) -> Iterator[Any]:
    if kind == "field":
        if isinstance(value, dict) and arg in value:
            yield value[arg]
    elif kind == "index":
        if isinstance(value, list) and -len(value) <= arg < len(value):
            yield value[arg]
    elif kind == "filter":
        if isinstance(value, list):
            yield from (item for item in value if _passes(item, arg))
    elif kind == "all":
        if isinstance(value, list):
            yield from value
        elif isinstance(value, dict):
            yield from value.values()
    else:
        yield from _deep(value, arg)


def _deep(value: Any, name: str) -> Iterator[Any]:
    if isinstance(value, dict):
        if name in value:
            yield value[name]
        for item in value.values():
            yield from _deep(item, name)
    elif isinstance(value, list):
        for item in value:
            yield from _deep(item, name)


def text(value: Any) -> str:
    """A value as kubectl prints it: strings raw, maps and lists as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


_TOKEN = re.compile(r"\{((?:[^{}\"]|\"(?:[^\"\\]|\\.)*\")*)\}")


def render_template(template: str, obj: Any) -> str:
    """Fill a `-o jsonpath=` template from `obj`."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    for match in _TOKEN.finditer(template):
        tokens.append(("text", template[pos : match.start()]))
        tokens.append(("expr", match.group(1).strip()))
        pos = match.end()
    if "{" in template[pos:] or "}" in template[pos:]:
        raise JSONPathError(f"invalid JSONPath template {template!r}: unbalanced braces")
    tokens.append(("text", template[pos:]))
    out: list[str] = []
    _render(tokens, 0, len(tokens), obj, out, template)
    return "".join(out)


def _render(
    tokens: list[tuple[str, str]], start: int, stop: int, obj: Any, out: list[str], template: str
) -> None:
    i = start
    while i < stop:
        kind, value = tokens[i]
        if kind == "text":
            out.append(value)
        elif value.startswith("range "):
            end = _matching_end(tokens, i, stop, template)
            for item in find(obj, value[len("range ") :]):
                _render(tokens, i + 1, end, item, out, template)
            i = end
        elif value == "end":
            raise JSONPathError(
                f"invalid JSONPath template {template!r}: {{end}} without {{range}}"
            )
        elif value.startswith('"'):
            out.append(_literal(value, template))
        else:
            out.append(" ".join(text(v) for v in find(obj, value)))
        i += 1


def _literal(value: str, template: str) -> str:
    try:
        return json.loads(value, strict=False)
    except json.JSONDecodeError as err:
        raise JSONPathError(f"invalid JSONPath template {template!r}: {value} {err.msg}") from err


def _matching_end(tokens: list[tuple[str, str]], i: int, stop: int, template: str) -> int:
    depth = 0
    for j in range(i + 1, stop):
        kind, value = tokens[j]
        if kind == "expr" and value.startswith("range "):
            depth += 1
        elif kind == "expr" and value == "end":
            if depth == 0:
                return j
            depth -= 1
    raise JSONPathError(f"invalid JSONPath template {template!r}: {{range}} without {{end}}")
