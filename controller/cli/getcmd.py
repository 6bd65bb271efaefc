"""`foylectl get`: find what was asked for, print it as kubectl would, follow with -w.

Behaviour a kubectl user relies on (issue 13): an empty list prints "No
resources found" on stderr (stdout stays parseable); a name that is not there
prints kubectl's NotFound line and the command exits 1 after printing what
was found; `-w -o json` prints one object per event; table rows printed while
watching keep the widths of the rows before them.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from controller.api.kinds import KindInfo, Resource
from controller.api.printable import one_line
from controller.api.selectors import InvalidSelector, parse_selector
from controller.cli.getargs import BadResourceArgs, Wanted, parse_resource_args
from controller.cli.output import Table, as_list, document, parse_custom_columns, qualified
from controller.errors import CommandError, UsageError
from controller.store.base import Gone, NotFound, Store, matches_labels


def find(store: Store, info: KindInfo, name_or_id: str) -> list[Resource]:
    """A resource by name or by the raw id in its spec; a LogFile also by its path.

    Empty when there is none. A path can match a LogFile per node and per
    rotated file, so this is a list.
    """
    from controller.api.names import name_for_id

    for candidate in dict.fromkeys((name_or_id, name_for_id(name_or_id))):
        try:
            return [store.get(info.kind, candidate)]
        except NotFound:
            continue
    if info.kind == "LogFile":
        paths = {name_or_id, os.path.abspath(os.path.expanduser(name_or_id))}
        return [o for o in store.list("LogFile") if o["spec"].get("path") in paths]
    return []


def not_found(store: Store, info: KindInfo, name: str) -> str:
    """kubectl's NotFound line; a local store is no server, so it names the file instead.
    The typed name is shown escaped (issue 24: it may hold control characters)."""
    path = getattr(store, "path", None)
    if path is None:
        return f'Error from server (NotFound): {info.plural}.foyle.io "{one_line(name)}" not found'
    return f'Error (NotFound): {info.plural}.foyle.io "{one_line(name)}" not found in {path}'


def wanted_from(args: argparse.Namespace) -> list[Wanted]:
    """The parsed resource arguments, with the flags that cannot go with them refused."""
    try:
        wanted = parse_resource_args(args.resources)
        parse_selector(args.selector)
        if args.output.startswith("custom-columns="):
            parse_custom_columns(args.output.partition("=")[2])
        if args.sort_by:
            from controller.cli.jsonpath import parse_path

            parse_path(args.sort_by)
    except (BadResourceArgs, InvalidSelector, ValueError) as err:
        raise UsageError(str(err)) from err
    if args.selector and any(w.names for w in wanted):
        raise UsageError("a name cannot be given together with a label selector (-l)")
    if args.watch and len(wanted) > 1:
        raise UsageError("-w watches a single resource type")
    return wanted


def cmd_get(args: argparse.Namespace, store: Store, namespace: str | None) -> int:
    wanted = wanted_from(args)
    printer = Printer(args, with_kind=len(wanted) > 1)
    streams = (
        len(wanted) == 1
        and not wanted[0].names
        and not args.sort_by
        and (printer.tabular or args.output == "name")
        and hasattr(store, "list_pages")
    )
    if streams:
        return _get_streaming(args, store, namespace, wanted[0].info, printer)
    found: list[tuple[KindInfo, list[Resource]]] = []
    missing: list[str] = []
    versions: dict[str, str] = {}
    for want in wanted:
        if want.names:
            items = []
            for name in want.names:
                matches = find(store, want.info, name)
                items.extend(matches)
                if not matches:
                    missing.append(not_found(store, want.info, name))
        else:
            items, versions[want.info.kind] = store.list_with_version(want.info.kind, args.selector)
        found.append((want.info, _sorted(items, args.sort_by)))
    single = len(wanted) == 1 and len(wanted[0].names) == 1 and len(found[0][1]) == 1
    printer.print_found(found, single=single)
    for line in missing:
        print(line, file=sys.stderr)
    listing_for_people = printer.tabular or args.output == "name"
    if listing_for_people and not missing and not any(items for _, items in found):
        where = f" in {namespace} namespace" if namespace else ""
        print(f"No resources found{where}.", file=sys.stderr)
    if missing:
        return 1
    if args.watch:
        info = wanted[0].info
        version = versions.get(info.kind) or store.list_with_version(info.kind)[1]
        _watch(store, info, version, set(wanted[0].names), args, printer)
    return 0


def _get_streaming(
    args: argparse.Namespace, store: Any, namespace: str | None, info: KindInfo, printer: Printer
) -> int:
    """A whole kind, printed page by page as it is read (the first rows come at once)."""
    version, pages = store.list_pages(info.kind, args.selector)
    printed = 0
    for items in pages:
        if items:
            printer.print_found([(info, items)], single=False)
        printed += len(items)
    if not printed:
        where = f" in {namespace} namespace" if namespace else ""
        print(f"No resources found{where}.", file=sys.stderr)
    if args.watch:
        _watch(store, info, version, set(), args, printer)
    return 0


def _sorted(items: list[Resource], sort_by: str | None) -> list[Resource]:
    """Items in the order of a field; a field none of them has is an error, as in kubectl."""
    if not sort_by:
        return items
    from controller.cli.jsonpath import find as find_path

    if items and not any(find_path(obj, sort_by) for obj in items):
        relaxed = sort_by if sort_by.startswith("{") else "{." + sort_by.lstrip(".") + "}"
        raise CommandError(  # kubectl's words, with the path as it relaxes it
            f'couldn\'t find any field with path "{relaxed}" in the list of objects'
        )

    def key(obj: Resource) -> tuple[int, Any]:
        values = find_path(obj, sort_by)
        if not values or values[0] is None:
            return (0, "")
        value = values[0]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (1, value)
        return (2, str(value))

    return sorted(items, key=key)


class Printer:
    """Prints found resources and then watch events, in the chosen output format."""

    def __init__(self, args: argparse.Namespace, *, with_kind: bool) -> None:
        self.output: str = args.output
        self.headers = not args.no_headers
        self.show_labels: bool = args.show_labels
        self.with_kind = with_kind
        self.watching: bool = args.watch
        self._tables: dict[str, Table] = {}
        self._headed: set[str] = set()  # kinds whose header row is printed

    def table_for(self, info: KindInfo) -> Table:
        if info.kind not in self._tables:
            custom = None
            if self.output.startswith("custom-columns="):
                custom = parse_custom_columns(self.output.partition("=")[2])
            self._tables[info.kind] = Table(
                info,
                wide=self.output == "wide",
                show_labels=self.show_labels,
                with_kind=self.with_kind,
                custom=custom,
                reserve=self.watching,
            )
        return self._tables[info.kind]

    @property
    def tabular(self) -> bool:
        return self.output in ("table", "wide") or self.output.startswith("custom-columns=")

    def _rows(self, info: KindInfo, items: list[Resource]) -> list[str]:
        """Table rows, after the header when this kind has not had one yet."""
        header = self.headers and info.kind not in self._headed
        self._headed.add(info.kind)
        return self.table_for(info).lines(items, headers=header)

    def print_found(self, found: list[tuple[KindInfo, list[Resource]]], *, single: bool) -> None:
        """Print what was found (a later page of a listing goes on under the same header)."""
        if self.tabular:
            blocks = ["\n".join(self._rows(info, items)) for info, items in found if items]
            if blocks:
                print("\n\n".join(blocks), flush=True)
        elif self.output == "name":
            for info, items in found:
                for obj in items:
                    print(qualified(info, obj["metadata"]["name"]), flush=True)
        elif self.watching:  # one document per object, as the events that follow
            for _, items in found:
                for obj in items:
                    self._print_document(obj)
        else:
            items = [obj for _, objs in found for obj in objs]
            doc: Any = items[0] if single else as_list(items)
            self._print_document(doc)

    def print_event(self, info: KindInfo, event_type: str, obj: Resource) -> None:
        if self.tabular:
            # the first event on an empty listing brings the header, as kubectl's does
            *header, row = self._rows(info, [obj])
            print(
                *header,
                row + ("   (deleted)" if event_type == "DELETED" else ""),
                sep="\n",
                flush=True,
            )
        elif self.output == "name":
            print(qualified(info, obj["metadata"]["name"]), flush=True)
        else:
            self._print_document(obj)

    def _print_document(self, doc: Any) -> None:
        text = document(doc, self.output)
        if self.output == "yaml" and self.watching:
            text = "---\n" + text
        # a template prints exactly what it says, as kubectl's does (no newline added)
        print(text, end="" if self.output.startswith("jsonpath=") else "\n", flush=True)


def _watch(
    store: Store,
    info: KindInfo,
    version: str,
    names: set[str],
    args: argparse.Namespace,
    printer: Printer,
) -> None:
    """Print every change after `version` until interrupted; re-list when history is gone.

    Issue 24: a watcher that fell behind the kept history re-lists and prints what
    changed since the last version it printed (kubectl's relist), not nothing.
    """

    def wanted(obj: Resource) -> bool:
        if names and not names & {obj["metadata"]["name"], obj["spec"].get("id")}:
            return False
        return matches_labels(obj, args.selector)

    while True:
        try:
            for event in store.watch(info.kind, version):
                version = event.resource_version
                if wanted(event.object):
                    printer.print_event(info, event.type, event.object)
        except Gone:
            items, relisted = store.list_with_version(info.kind)
            for obj in items:
                if _newer(obj["metadata"]["resourceVersion"], version) and wanted(obj):
                    printer.print_event(info, "MODIFIED", obj)
            version = relisted


def _newer(candidate: str, seen: str) -> bool:
    """`candidate` came after `seen` (versions as numbers; opaque ones: assume so)."""
    try:
        return int(candidate) > int(seen)
    except ValueError:
        return True
