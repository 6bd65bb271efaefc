"""The resources `foylectl get` is asked for, spelt as kubectl spells them.

`KIND[,KIND...] [NAME...]` or `KIND/NAME...`, where KIND is any name of a
kind (`bl`, `blocklogs`, `BlockLog`) optionally qualified with the API group
(`blocklog.foyle.io`, `blocklogs.v1alpha1.foyle.io`). So what `-o name`
prints (`blocklog.foyle.io/NAME`) can be fed back to `get` and `describe`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.api.kinds import GROUP, KINDS, VERSION, KindInfo, UnknownKind, lookup


class BadResourceArgs(ValueError):
    """Resource arguments that name nothing `get` can show."""


@dataclass
class Wanted:
    info: KindInfo
    names: list[str] = field(default_factory=list)  # none: list them all


def kind_of(word: str) -> KindInfo:
    """The kind named by `word`, with or without `.foyle.io` or `.v1alpha1.foyle.io`."""
    bare = word.strip()
    for suffix in (f".{VERSION}.{GROUP}", f".{GROUP}"):
        if bare.lower().endswith(suffix):
            bare = bare[: -len(suffix)]
            break
    try:
        return lookup(bare)
    except UnknownKind as err:
        raise BadResourceArgs(str(err)) from err


def parse_resource_args(args: list[str]) -> list[Wanted]:
    """What to get, in order, one entry per kind."""
    if not args:
        raise BadResourceArgs(f"you must specify the type of resource: {kind_list()}")
    if "/" in args[0]:  # TYPE/NAME...; `get lf /var/log/x.jsonl` names a path instead
        return _typed_names(args)
    kinds = [kind_of(word) for word in args[0].split(",") if word.strip()]
    if not kinds:
        raise BadResourceArgs(f"no resource type in {args[0]!r}")
    names = args[1:]
    if names and len(kinds) > 1:
        raise BadResourceArgs("names need a single resource type: use TYPE/NAME for several types")
    unique = {info.kind: info for info in kinds}
    return [Wanted(info, [_bare_name(info, name) for name in names]) for info in unique.values()]


def kind_list() -> str:
    """Every kind with its short names, from the registry (so a new kind is never left out)."""
    return ", ".join(f"{k.plural} ({'/'.join(k.short_names)})" for k in KINDS)


def _bare_name(info: KindInfo, name: str) -> str:
    """`blocklog.foyle.io/X` after `bl` is X (what `-o name` prints, pasted after the kind).

    A prefix that names another kind is refused, as kubectl refuses it; one that
    names no kind is part of the name (a LogFile's path, `logs/a.jsonl`).
    """
    prefix, sep, rest = name.partition("/")
    if not sep or not prefix or not rest:
        return name
    try:
        named = kind_of(prefix)
    except BadResourceArgs:
        return name
    if named.kind != info.kind:
        if info.kind == "LogFile":  # a relative path whose directory is called e.g. `traces`
            return name
        raise BadResourceArgs(
            f"{name!r} names a {named.singular}, not a {info.singular}: use {name} alone"
        )
    return rest


def _typed_names(args: list[str]) -> list[Wanted]:
    wanted: dict[str, Wanted] = {}
    for arg in args:
        kind, sep, name = arg.partition("/")
        if not sep or not kind or not name:
            raise BadResourceArgs(
                f"there is no need to specify a resource type as a separate argument when"
                f" passing arguments in resource/name form (got {arg!r})"
            )
        info = kind_of(kind)
        wanted.setdefault(info.kind, Wanted(info)).names.append(name)
    return list(wanted.values())
