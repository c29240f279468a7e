"""Directory export and import as JSON lines (backup, migration, seeding a lab).

One job: `export_lines` writes one JSON object per directory object (tombstones included,
secrets never); `import_lines` reads them back idempotently in one transaction: an object
already present with the same or a higher version is left alone, a newer one replaces it and
its proxy index entries. Objects of this site that change get a fresh local USN; objects of
other sites keep their owner's USN (they are replicas). Any bad line aborts the whole import
with its line number, so a half-imported directory cannot happen.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from sitemail.core.address import parse_address
from sitemail.core.errors import InvalidAddressError, InvalidValueError, SitemailError
from sitemail.directory.model import ObjectKind, parse_proxy
from sitemail.directory.objects import allocate_usns, index_proxies, unindex_proxies
from sitemail.directory.service import Directory
from sitemail.store.tables import dir_object

__all__ = ["ImportReport", "export_lines", "import_lines"]

_FIELDS = (
    "guid",
    "site",
    "kind",
    "name",
    "display_name",
    "attrs",
    "usn_changed",
    "version",
    "is_deleted",
)


_TYPES: dict[str, type] = {
    "guid": str,
    "site": str,
    "name": str,
    "display_name": str,
    "usn_changed": int,
    "version": int,
    "is_deleted": bool,
}
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


@dataclass(frozen=True, slots=True)
class ImportReport:
    created: int
    updated: int
    unchanged: int


def export_lines(directory: Directory) -> Iterator[str]:
    with directory.store.read() as conn:
        rows = conn.execute(
            select(dir_object).order_by(dir_object.c.site, dir_object.c.usn_changed)
        )
        for row in rows:
            yield json.dumps(
                {f: getattr(row, f) for f in _FIELDS}, sort_keys=True, ensure_ascii=False
            )


def _parse(line: str, number: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidValueError(f"line {number}: not JSON ({exc.msg})") from exc
    if not isinstance(record, dict):
        raise InvalidValueError(f"line {number}: expected a JSON object")
    missing = [f for f in _FIELDS if f not in record]
    if missing:
        raise InvalidValueError(f"line {number}: missing field(s) {', '.join(missing)}")
    try:
        ObjectKind(record["kind"])
    except ValueError as exc:
        raise InvalidValueError(f"line {number}: unknown kind {record['kind']!r}") from exc
    if not isinstance(record["attrs"], dict) or not isinstance(record["version"], int):
        raise InvalidValueError(f"line {number}: attrs must be an object, version an integer")
    for key, kind in _TYPES.items():  # bool is an int in Python: refuse it where ints are due
        if not isinstance(record[key], kind) or (kind is int and isinstance(record[key], bool)):
            raise InvalidValueError(f"line {number}: {key} must be {_TYPE_NAMES[kind]}")
    for key in ("proxies", "members"):
        value = record["attrs"].get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidValueError(f"line {number}: attrs.{key} must be a list of strings")
    for proxy in map(parse_proxy, record["attrs"].get("proxies", [])):
        if proxy.type == "SMTP":
            try:
                parse_address(proxy.address)
            except InvalidAddressError as exc:
                raise InvalidValueError(f"line {number}: {exc.message}") from exc
    return record


def import_lines(directory: Directory, lines: Iterable[str]) -> ImportReport:
    local = directory.local_site
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    with directory.store.write() as conn:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            record = _parse(line, number)
            try:
                outcome = _import_one(conn, record, local, directory.clock.now())
            except SitemailError as exc:
                raise type(exc)(f"line {number}: {exc.message}") from exc
            counts[outcome] += 1
    return ImportReport(**counts)


# This site's own configuration objects that `sitemail init` makes afresh: a backup restored
# into a new data dir carries the same ones under other guids, matched here by kind and name.
_INIT_KINDS = frozenset({ObjectKind.SITE, ObjectKind.SERVER, ObjectKind.SITE_ADDRESSING})
_KEPT_LOCALLY = ("public_key",)  # the new data dir's own key pair stays


def _restore_init_object(
    conn: Connection, record: dict[str, Any], local: str, now: float
) -> str | None:
    """Fold an exported init-made object into its fresh twin; None if there is no twin."""
    if record["site"] != local or ObjectKind(record["kind"]) not in _INIT_KINDS:
        return None
    twin = conn.execute(
        select(dir_object.c.guid, dir_object.c.attrs, dir_object.c.version).where(
            dir_object.c.site == local,
            dir_object.c.kind == record["kind"],
            dir_object.c.name == record["name"],
            dir_object.c.is_deleted.is_(False),
            dir_object.c.guid != record["guid"],
        )
    ).first()
    if twin is None or record["is_deleted"]:
        return None if twin is None else "unchanged"
    attrs = dict(record["attrs"])
    for key in _KEPT_LOCALLY:
        if key in twin.attrs:
            attrs[key] = twin.attrs[key]
    if attrs == twin.attrs:
        return "unchanged"
    conn.execute(
        update(dir_object)
        .where(dir_object.c.guid == twin.guid)
        .values(
            attrs=attrs,
            display_name=record["display_name"],
            version=twin.version + 1,
            usn_changed=allocate_usns(conn, local),
            changed_at=now,
        )
    )
    return "updated"


def _import_one(conn: Connection, record: dict[str, Any], local: str, now: float) -> str:
    exists = conn.execute(
        select(dir_object.c.guid).where(dir_object.c.guid == record["guid"])
    ).first()
    if exists is None:
        restored = _restore_init_object(conn, record, local, now)
        if restored is not None:
            return restored
    current = conn.execute(
        select(dir_object.c.version, dir_object.c.attrs, dir_object.c.is_deleted).where(
            dir_object.c.guid == record["guid"]
        )
    ).first()
    same = (
        current is not None
        and current.attrs == record["attrs"]
        and (current.is_deleted == record["is_deleted"])
    )
    if current is not None and (same or current.version > record["version"]):
        return "unchanged"
    usn = allocate_usns(conn, local) if record["site"] == local else record["usn_changed"]
    values = {f: record[f] for f in _FIELDS if f != "guid"} | {
        "usn_changed": usn,
        "changed_at": now,
    }
    if current is None:
        conn.execute(insert(dir_object).values(guid=record["guid"], usn_created=usn, **values))
    else:
        values["version"] = max(record["version"], current.version + 1)
        conn.execute(update(dir_object).where(dir_object.c.guid == record["guid"]).values(**values))
        unindex_proxies(conn, record["guid"])
    if not record["is_deleted"]:
        index_proxies(conn, record["guid"], record["attrs"].get("proxies", []))
    return "created" if current is None else "updated"
