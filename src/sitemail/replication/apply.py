"""Replicated objects on the wire and their application to the local directory.

One job: turn directory rows into wire objects and apply received wire objects, idempotently
and in any order. Rules (DESIGN.md section 3):
- an object belongs to the naming context named by its `site`; objects of this site's own
  naming context are never taken from anyone (we are their only writer);
- per guid the higher `version` wins (ties: the higher `usn_changed`); an equal or older copy
  changes nothing, so duplicates and replays of answers are harmless;
- a tombstone (`is_deleted`) replaces the object and drops its addresses from the index;
- proxy addresses: when two objects claim one address (an admin error across sites that only
  replication reveals), the index gives it to the lowest guid (UUIDv7: the older object) and
  keeps the other claims in `proxy_conflict`, so every site routes the same way whatever
  order objects arrived in, ours included; a losing claim takes over when the winner lets the
  address go, and a losing claim of this site's own object is moved aside by its owner
  (directory.claims, called by the replicator). The KCC reports conflicts and moves.
Secrets never travel: wire objects are the `dir_object` rows only (no `mailbox_secret`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple

import orjson
from sqlalchemy import JSON, Connection, Table, Text, delete, insert, select, type_coerce, update

from sitemail.core.address import DSA_LOCAL_PART
from sitemail.directory import ObjectKind, parse_proxy
from sitemail.directory.objects import (
    owners_of,
    promote_held_claims,
    proxy_rows,
    proxy_text_rows,
)
from sitemail.store.tables import dir_object, proxy_address, proxy_conflict

__all__ = [
    "ApplyResult",
    "Checked",
    "WireObject",
    "apply_objects",
    "check_objects",
    "object_from_wire",
    "objects_since",
]

_KINDS = frozenset(k.value for k in ObjectKind)


class WireObject(NamedTuple):
    """One directory object as it travels (a NamedTuple: a full pull makes 100,000 of them,
    and a tuple is made in a fraction of a frozen dataclass's time)."""

    guid: str
    site: str
    kind: str
    name: str
    display_name: str
    attrs: dict[str, Any]
    usn_created: int
    usn_changed: int
    version: int
    is_deleted: bool
    changed_at: float

    def as_wire(self) -> dict[str, Any]:
        return self._asdict()

    def row(self) -> dict[str, Any]:
        return self._asdict()


@dataclass(slots=True)
class ApplyResult:
    applied: int = 0  # created or replaced
    unchanged: int = 0  # equal or older than ours
    refused: int = 0  # malformed, or claiming a naming context it may not


_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SITE_MAX = 64
_NAME_MAX = 256
_DSA_PREFIX = f"{DSA_LOCAL_PART}@"  # no replica may claim a site's directory-service mailbox
_INT_MAX = 2**63 - 1  # SQLite's INTEGER (and BIGINT elsewhere)
_IN_CHUNK = 500  # bound parameters per IN (...): below SQLite's oldest limit of 999


def object_from_wire(data: object) -> WireObject | None:
    """A validated wire object, or None when anything is missing or of the wrong type.

    Exact type checks (`type(x) is str`), not isinstance: JSON gives exactly these types, and
    this runs for every replicated object (100,000 in a full pull), so the checks are written
    out in two conditions rather than a helper per field.
    """
    if type(data) is not dict:
        return None
    get = data.get
    guid, site, kind, name = get("guid"), get("site"), get("kind"), get("name")
    display_name, attrs, deleted = get("display_name"), get("attrs"), get("is_deleted")
    created, changed, version = get("usn_created"), get("usn_changed"), get("version")
    changed_at = get("changed_at")
    if not (
        type(guid) is str
        and type(site) is str
        and type(kind) is str
        and type(name) is str
        and type(display_name) is str
        and type(attrs) is dict
        and type(deleted) is bool
        and type(created) is int  # bool is not `int` here
        and type(changed) is int
        and type(version) is int
        and (type(changed_at) is float or type(changed_at) is int)
    ):
        return None
    if not (
        kind in _KINDS
        and 0 < len(site) <= _SITE_MAX
        and 0 < len(name) <= _NAME_MAX
        and 0 <= created <= _INT_MAX  # beyond 2**63 the database cannot store it
        and 0 <= changed <= _INT_MAX
        and 0 <= version <= _INT_MAX
        and _GUID.fullmatch(guid)
        and _proxies_ok(attrs.get("proxies", []))
        and _attrs_ok(kind, attrs)
    ):
        return None
    return WireObject(
        guid,
        site,
        kind,
        name,
        display_name,
        attrs,
        created,
        changed,
        version,
        deleted,
        float(changed_at),
    )


def _proxies_ok(proxies: object) -> bool:
    return type(proxies) is list and all(
        type(p) is str
        and ":" in p
        and "@" in p
        and len(p) <= 330
        and not p.partition(":")[2].lower().startswith(_DSA_PREFIX)
        for p in proxies
    )


# What other code reads from each kind's attrs, with its type: a replica lacking it (or with
# the wrong type) would break routing or the KCC at every site it reaches, so it is refused.
_REQUIRED_ATTRS: dict[str, tuple[tuple[str, type], ...]] = {
    "site": (("organization", str),),
    "site_addressing": (("smtp", str),),
    "domain_route": (("host", str),),
    "replication_connector": (("peer_key", str), ("routing_address", str)),
    "contact": (("target", str),),
    "connected_site": (("routing_address", str),),
    "domain": (("type", str),),
}
_OPTIONAL_ATTRS: dict[str, tuple[tuple[str, type], ...]] = {
    "site": (("public_key", str), ("routing_domain", str), ("removed_sites", list)),
    "group": (("members", list),),
    "server": (("listen", list),),
    "connected_site": (("cost", int), ("tls_fingerprint", str)),
    "domain": (("forward_unresolved", str),),
}


def _attrs_ok(kind: str, attrs: dict[str, Any]) -> bool:
    if attrs == {}:
        return True  # a tombstone's attrs are emptied
    for name, kind_type in _REQUIRED_ATTRS.get(kind, ()):
        if type(attrs.get(name)) is not kind_type:
            return False
    for name, kind_type in _OPTIONAL_ATTRS.get(kind, ()):
        if name in attrs and type(attrs[name]) is not kind_type:
            return False
    if kind == "site_addressing" and "@" not in attrs["smtp"]:
        return False
    released = attrs.get("released", [])  # a tombstone's given-up addresses
    if type(released) is not list or not all(type(a) is str and len(a) <= 330 for a in released):
        return False
    members = attrs.get("members", [])
    return all(type(m) is str for m in members) if type(members) is list else False


class Checked(NamedTuple):
    """An answer's objects checked off the store's writer (the busy side of a long pull),
    with what storing each valid one takes made ready there too: its `attrs` as JSON text and
    its address-index rows. `valid`, `texts` and `index_rows` are aligned."""

    objects: list[WireObject | None]  # per object on the wire: None when refused
    valid: list[WireObject]
    texts: list[str]
    index_rows: list[list[dict[str, Any]]]


def check_objects(raw: Sequence[object]) -> Checked:
    """`object_from_wire` for each, and the rows of each valid one (see Checked)."""
    objects = [object_from_wire(o) for o in raw]
    valid = [o for o in objects if o is not None]
    return Checked(
        objects,
        valid,
        [_json_text(o.attrs) for o in valid],
        [_index_rows(o) for o in valid],
    )


_OBJECT_COLUMNS = (
    "guid, site, kind, name, display_name, attrs, usn_created, usn_changed, version, "
    "is_deleted, changed_at"
)
_OBJECTS_SINCE = (
    f"SELECT {_OBJECT_COLUMNS} FROM dir_object "  # noqa: S608 - constant text, bound values
    "WHERE site = ? AND usn_changed > ? ORDER BY usn_changed LIMIT ?"
)


def objects_since(conn: Connection, nc: str, usn: int, limit: int) -> list[WireObject]:
    """Objects of naming context `nc` (tombstones included) changed after `usn`, oldest first.

    This is the responder's main read (a full pull reads 100,000 rows): on SQLite plain SQL
    straight to the driver, as SQLAlchemy's per-row result processing costs several times
    SQLite's own read, and `attrs` parsed here (drivers that parse JSON themselves hand back
    a dict, which is taken as is)."""
    if conn.dialect.name == "sqlite":
        rows: Sequence[Sequence[Any]] = conn.exec_driver_sql(
            _OBJECTS_SINCE, (nc, usn, limit)
        ).fetchall()
    else:
        c = dir_object.c
        rows = conn.execute(
            select(
                c.guid,
                c.site,
                c.kind,
                c.name,
                c.display_name,
                type_coerce(c.attrs, Text),
                c.usn_created,
                c.usn_changed,
                c.version,
                c.is_deleted,
                c.changed_at,
            )
            .where(c.site == nc, c.usn_changed > usn)
            .order_by(c.usn_changed)
            .limit(limit)
        ).all()
    loads = orjson.loads
    return [
        WireObject(
            guid,
            site,
            kind,
            name,
            display_name,
            attrs if isinstance(attrs, dict) else loads(attrs),
            created,
            changed,
            version,
            bool(deleted),
            float(changed_at),
        )
        for (
            guid,
            site,
            kind,
            name,
            display_name,
            attrs,
            created,
            changed,
            version,
            deleted,
            changed_at,
        ) in rows
    ]


def apply_objects(
    conn: Connection,
    objects: Sequence[WireObject],
    *,
    local_site: str,
    allowed: Iterable[str],
    checked: Checked | None = None,
) -> ApplyResult:
    """Apply replicated objects in one transaction (the caller's); see the module rules.

    `allowed` are the naming contexts the answer declared; an object outside them is refused.
    `checked`: the rows of `objects` made ready by `check_objects` (its `valid` is `objects`).
    """
    result = ApplyResult()
    ncs = set(allowed) - {local_site}
    held = _current_versions(conn, [o.guid for o in objects if o.site in ncs])
    fresh: dict[str, int] = {}  # guid -> index in objects, of the newest copy
    changed: list[WireObject] = []
    for i, obj in enumerate(objects):
        if obj.site not in ncs:
            result.refused += 1
            continue
        current = held.get(obj.guid)
        if current is not None and current[0] != obj.site:
            result.refused += 1  # a guid may not move to another naming context
            continue
        if current is not None and (current[1], current[2]) >= (obj.version, obj.usn_changed):
            result.unchanged += 1
            continue
        if obj.guid not in held or obj.guid in fresh:
            fresh[obj.guid] = i  # not stored yet: only the newest copy gets inserted
        else:
            changed.append(obj)
        held[obj.guid] = (obj.site, obj.version, obj.usn_changed)
        result.applied += 1
    order = list(fresh.values())
    if checked is not None and checked.valid is objects:
        texts = [checked.texts[i] for i in order]
        index_rows = [row for i in order for row in checked.index_rows[i]]
    else:
        texts = [_json_text(objects[i].attrs) for i in order]
        index_rows = [row for i in order for row in _index_rows(objects[i])]
    _insert_fresh(conn, [objects[i] for i in order], texts, index_rows, local_site)
    for obj in changed:
        _store(conn, obj, local_site)
    return result


def _insert_fresh(
    conn: Connection,
    objects: Sequence[WireObject],
    texts: Sequence[str],
    rows: Sequence[dict[str, Any]],
    local_site: str,
) -> None:
    """New objects in bulk (`texts`: their attrs as JSON; `rows`: their address-index rows):
    one insert for the objects, one for every uncontested address."""
    if not objects:
        return
    _insert_objects(conn, objects, texts)
    taken = _owners(conn, [r["address_key"] for r in rows])
    free: list[dict[str, Any]] = []
    contested: list[dict[str, Any]] = []
    for row in rows:
        key = row["address_key"]
        (contested if key in taken else free).append(row)
        taken.setdefault(key, row["guid"])
    bulk_insert(conn, proxy_address, free)
    for row in contested:
        _claim(conn, row, local_site)


def _index_rows(obj: WireObject) -> list[dict[str, Any]]:
    """The index rows of a live object's proxies (none for a tombstone)."""
    if obj.is_deleted:
        return []
    return proxy_text_rows(obj.guid, obj.attrs.get("proxies", ()))


_WIRE_FIELDS = WireObject._fields  # the dir_object columns, by the same names


def _insert_objects(conn: Connection, objects: Sequence[WireObject], texts: Sequence[str]) -> None:
    """`bulk_insert` of dir_object rows (`texts`: their attrs as JSON), each parameter tuple
    read straight off the object (on SQLite: no dict per row)."""
    if conn.dialect.name != "sqlite":
        bulk_insert(conn, dir_object, [o.row() for o in objects])
        return
    sql, order = _compiled_insert(conn, dir_object, _WIRE_FIELDS)
    attrs = order.index("attrs")
    fields = attrgetter(*order)
    params = []
    for obj, text in zip(objects, texts, strict=True):
        values = list(fields(obj))
        values[attrs] = text
        params.append(tuple(values))
    conn.exec_driver_sql(sql, params)


def _json_text(value: Any) -> str:
    """JSON as the column's text (orjson: ten times `json.dumps`, and compact)."""
    return orjson.dumps(value).decode()


_COMPILED: dict[tuple[str, str, tuple[str, ...]], tuple[str, list[str]]] = {}


def _compiled_insert(
    conn: Connection, table: Table, columns: Sequence[str]
) -> tuple[str, list[str]]:
    """The INSERT statement for `columns` of `table` and its parameters' order (cached)."""
    key = (conn.dialect.name, table.name, tuple(columns))
    found = _COMPILED.get(key)
    if found is None:
        compiled = insert(table).compile(dialect=conn.dialect, column_keys=list(columns))
        found = _COMPILED[key] = (str(compiled), list(compiled.positiontup or []))
    return found


def bulk_insert(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Many rows at once. On SQLite straight to the driver's executemany with JSON encoded
    here: SQLAlchemy's per-row parameter processing costs more than SQLite's insert itself
    (a full pull applies 100,000 objects). Elsewhere, the ordinary executemany."""
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        conn.execute(insert(table), list(rows))
        return
    sql, order = _compiled_insert(conn, table, list(rows[0]))
    fields = itemgetter(*order)
    encoded = [i for i, name in enumerate(order) if isinstance(table.c[name].type, JSON)]
    if len(order) == 1 or encoded:
        params = [
            tuple(_json_text(r[n]) if i in encoded else r[n] for i, n in enumerate(order))
            for r in rows
        ]
    else:
        params = [fields(r) for r in rows]
    conn.exec_driver_sql(sql, params)


def _current_versions(conn: Connection, guids: Sequence[str]) -> dict[str, tuple[str, int, int]]:
    c = dir_object.c
    if conn.dialect.name == "sqlite":  # plain SQL: compiling 512 bound parameters costs more
        found: dict[str, tuple[str, int, int]] = {}
        for part in _chunks(list(guids)):
            marks = ",".join("?" * len(part))
            rows = conn.exec_driver_sql(
                "SELECT guid, site, version, usn_changed FROM dir_object "  # noqa: S608
                f"WHERE guid IN ({marks})",
                tuple(part),
            )
            found.update((guid, (site, version, usn)) for guid, site, version, usn in rows)
        return found
    rows = conn.execute(
        select(c.guid, c.site, c.version, c.usn_changed).where(c.guid.in_(list(guids)))
    )
    return {r.guid: (r.site, r.version, r.usn_changed) for r in rows}


def _owners(conn: Connection, keys: Sequence[str]) -> dict[str, str]:
    """`owners_of` (which guid holds each address key), in plain SQL on SQLite."""
    if conn.dialect.name != "sqlite":
        return owners_of(conn, keys)
    found: dict[str, str] = {}
    for part in _chunks(list(keys)):
        marks = ",".join("?" * len(part))
        rows = conn.exec_driver_sql(
            f"SELECT address_key, guid FROM proxy_address WHERE address_key IN ({marks})",  # noqa: S608
            tuple(part),
        )
        found.update((key, guid) for key, guid in rows)
    return found


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def _store(conn: Connection, obj: WireObject, local_site: str) -> None:
    conn.execute(update(dir_object).where(dir_object.c.guid == obj.guid).values(**obj.row()))
    proxies = [] if obj.is_deleted else [str(p) for p in obj.attrs.get("proxies", [])]
    reindex(conn, obj.guid, proxies, local_site)


def reindex(conn: Connection, guid: str, proxies: Sequence[str], local_site: str) -> None:
    """Make the index and the conflict claims of `guid` equal `proxies` (lowest guid wins)."""
    released = {
        r.address_key
        for r in conn.execute(
            select(proxy_address.c.address_key).where(proxy_address.c.guid == guid)
        )
    }
    conn.execute(delete(proxy_address).where(proxy_address.c.guid == guid))
    conn.execute(delete(proxy_conflict).where(proxy_conflict.c.guid == guid))
    rows = {r["address_key"]: r for r in proxy_rows(guid, map(parse_proxy, proxies))}
    for row in rows.values():
        _claim(conn, row, local_site)
    promote_held_claims(conn, released - set(rows))


def _claim(conn: Connection, row: dict[str, Any], local_site: str) -> None:
    """Claim one address for row["guid"]: free -> index; else the lower guid holds it, the
    same rule at every site (our own recipients included: directory.claims moves a losing
    claim of ours aside), so every site routes the address to the same object."""
    del local_site  # kept in the signature: every caller passes it
    key = row["address_key"]
    owner = conn.execute(
        select(proxy_address, dir_object.c.site)
        .join(dir_object, dir_object.c.guid == proxy_address.c.guid)
        .where(proxy_address.c.address_key == key)
    ).first()
    if owner is None:
        conn.execute(insert(proxy_address).values(**row))
        return
    if owner.guid == row["guid"]:
        return  # the same address twice in one list: the first spelling stands
    if row["guid"] < owner.guid:
        # we win: the current owner's claim becomes a conflict
        conn.execute(delete(proxy_address).where(proxy_address.c.address_key == key))
        held = {c.name: owner._mapping[c.name] for c in proxy_address.columns}
        conn.execute(insert(proxy_conflict).values(**held))
        conn.execute(insert(proxy_address).values(**row))
    else:
        conn.execute(insert(proxy_conflict).values(**row))
