"""Changing Site Addressing and re-addressing every recipient of the site.

One job: `plan_readdress` computes, without writing, the new primary SMTP address of every live
recipient of this site under a new template (the dry-run diff), resolving collisions across the
organisation by appending a counter (`jsmith2`); `apply_readdress` writes a plan in bulk: new
primary, old primary kept as a secondary unless `drop_old`, one USN each, index updated. A plan
is applied in the transaction that made it (its collision checks and row references hold there).

It is built for 100,000 recipients in seconds (bench/readdress.py): one read of the index
entries in the template's domain (the only ones a new address can clash with), one read of the
recipients' rows, set arithmetic in memory, and batched writes that touch only the index rows
that change. The per-recipient work is plain tuples and strings: the plan keeps what it computed
as rows and builds `Readdress` values only when asked (a dry run's diff). On SQLite (the default
store) the rows are read and written through the driver: attributes are decoded in one JSON
parse, and each object is rewritten by its rowid, one b-tree probe instead of two. Elsewhere the
same plan goes through ordinary SQLAlchemy statements. The common case on SQLite (`%m` template,
old primaries kept, no collision; see "the common case" below) skips the per-recipient plan: the
recipients are staged in a temporary table and the whole run is a few set-based statements,
with the per-recipient plan computed only if its changes are asked for.

Better than Exchange 5.5 (KB Q291086): the old primary is kept by default, so mail to it still
arrives; an address the recipient already holds as a secondary is promoted (KB Q196421).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    false,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.sql.dml import UpdateBase

from sitemail.directory.addressing import Template, is_plain_local_part
from sitemail.directory.model import (
    RECIPIENT_KINDS,
    Guid,
    Recipient,
    format_proxy,
    parse_proxy,
)
from sitemail.directory.objects import allocate_usns
from sitemail.store.tables import dir_object, proxy_address

__all__ = ["Collision", "Readdress", "ReaddressPlan", "apply_readdress", "plan_readdress"]

_BATCH = 2000
Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Collision:
    alias: str
    wanted: str
    given: str
    held_by: str  # "alias (site)" of the recipient that holds the wanted address


@dataclass(frozen=True, slots=True)
class Readdress:
    recipient: Recipient
    old_primary: str
    new_primary: str
    new_proxies: list[str]
    promoted: bool = False  # the new primary was already one of the recipient's addresses
    released: tuple[str, ...] = ()  # keys of old primaries given up (drop_old)

    @property
    def changed(self) -> bool:
        return bool(self.new_proxies != self.recipient.attrs.get("proxies", []))


class _Planned(NamedTuple):
    """One recipient's part of a plan: its row as read, and its `Readdress` as plain values."""

    guid: str
    kind: str
    name: str
    display_name: str
    attrs: dict[str, Any]
    usn_changed: int
    version: int
    ref: Any  # what the write finds the row by: its rowid on SQLite, else its guid
    old_primary: str
    new_primary: str
    new_proxies: list[str]
    promoted: bool
    released: tuple[str, ...]
    demoted: tuple[str, ...]  # keys of the SMTP primaries the recipient holds now
    changed: bool


# A live recipient's row: guid, kind, name, display_name, attrs, usn_changed, version, ref.
_Row = tuple[str, str, str, str, dict[str, Any], int, int, Any]
# The same as read on SQLite, before decoding: attrs is JSON text, ref the rowid.
_TextRow = tuple[str, str, str, str, str, int, int, int]


@dataclass(slots=True)
class _Bulk:
    """A plan of the common case, staged in a temporary table and written set-based in SQL.

    `read` holds the recipients' rows as read (attributes still JSON text): their `_Planned`
    rows are computed only if someone asks for the plan's changes.
    """

    count: int
    suffix: str  # "@" + the template's domain: every new primary is alias + suffix
    read: list[_TextRow] = field(repr=False)


@dataclass(slots=True)
class ReaddressPlan:
    template: Template
    drop_old: bool
    site: str = ""
    collisions: list[Collision] = field(default_factory=list)
    rows: list[_Planned] = field(default_factory=list, repr=False)
    bulk: _Bulk | None = field(default=None, repr=False)
    _changes: list[Readdress] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def changes(self) -> list[Readdress]:
        """Every recipient's re-addressing, in creation order (built on first use)."""
        if self._changes is None:
            if self.bulk is not None and not self.rows:
                self.rows = _bulk_rows(self.bulk)
            kinds = {str(k): k for k in RECIPIENT_KINDS}
            self._changes = [
                Readdress(
                    Recipient(
                        Guid(p.guid),
                        self.site,
                        kinds[p.kind],
                        p.name,
                        p.display_name,
                        p.attrs,
                        p.usn_changed,
                        p.version,
                    ),
                    p.old_primary,
                    p.new_primary,
                    p.new_proxies,
                    p.promoted,
                    p.released,
                )
                for p in self.rows
            ]
        return self._changes

    @property
    def changed(self) -> list[Readdress]:
        return [c for c in self.changes if c.changed]

    @property
    def changed_count(self) -> int:
        """How many recipients the plan changes (`len(changed)`, without building them)."""
        if self.bulk is not None:
            return self.bulk.count  # every one: none holds its new address yet
        return sum(p.changed for p in self.rows)


def _driver_path(conn: Connection) -> bool:
    """Whether to read and write through the DBAPI driver (SQLite) or through SQLAlchemy."""
    return conn.dialect.name == "sqlite"


_KINDS = sorted(str(k) for k in RECIPIENT_KINDS)


def _live_recipients(conn: Connection, site: str) -> list[_Row]:
    """The live recipients of `site`, oldest first (creation order decides collisions)."""
    c = dir_object.c
    where = (c.site == site, c.kind.in_(_KINDS), c.is_deleted.is_(False))
    if not _driver_path(conn):
        result = conn.execute(
            select(c.guid, c.kind, c.name, c.display_name, c.attrs, c.usn_changed, c.version)
            .where(*where)
            .order_by(c.usn_created)
        )
        return [
            (r.guid, r.kind, r.name, r.display_name, r.attrs, r.usn_changed, r.version, r.guid)
            for r in result
        ]
    # SQLite: rowids and the attributes' JSON text straight from the driver, sorted here (no
    # temporary b-tree).
    statement = select(
        c.usn_created, c.guid, c.kind, c.name, c.display_name, c.attrs, c.usn_changed,
        c.version, literal_column("rowid"),
    ).where(*where)  # fmt: skip
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = tuple(compiled.params[name] for name in compiled.positiontup or [])
    cursor = conn.exec_driver_sql(str(compiled), params).cursor
    assert cursor is not None
    rows = list(cursor.fetchall())
    rows.sort(key=_first)
    return _decode([row[1:] for row in rows])


def _decode(rows: Sequence[_TextRow]) -> list[_Row]:
    """Rows read on SQLite with their attributes decoded: one parse of all the texts joined
    into an array, at C speed (SQLAlchemy's JSON type would call json.loads per row)."""
    texts = [row[4] for row in rows]
    try:
        decoded = json.loads(f"[{','.join(texts)}]")
    except ValueError:
        decoded = None
    if not isinstance(decoded, list) or len(decoded) != len(rows):
        decoded = [json.loads(text) for text in texts]  # says which row is not JSON
    return [
        (guid, kind, name, display_name, attrs, usn, version, rowid)
        for (guid, kind, name, display_name, _, usn, version, rowid), attrs in zip(
            rows, decoded, strict=True
        )
    ]


def _first(row: Sequence[Any]) -> Any:
    return row[0]


def _holders(conn: Connection, domain: str) -> dict[str, str]:
    """Address key -> holder guid for every address in `domain`, the template's domain: every
    address the plan hands out is in it, so no other address can clash (one indexed read)."""
    rows = conn.execute(
        select(proxy_address.c.address_key, proxy_address.c.guid).where(
            proxy_address.c.domain == domain
        )
    )
    return dict(rows.all())


def _describe(conn: Connection, guid: str) -> str:
    row = conn.execute(
        select(dir_object.c.name, dir_object.c.site).where(dir_object.c.guid == guid)
    ).first()
    return f"{row.name} ({row.site})" if row is not None else guid


def plan_readdress(
    conn: Connection, site: str, template: Template, *, drop_old: bool
) -> ReaddressPlan:
    """Compute the new addresses of every live recipient of `site`; writes nothing."""
    plan = ReaddressPlan(template=template, drop_old=drop_old, site=site)
    if (
        template.is_alias
        and not drop_old
        and _bulk_path(conn)
        and _bulk_may_fit(conn, site, template)
    ):
        read = _stage(conn, site, template.domain)
        if _staged_fits(conn, read):
            plan.bulk = _Bulk(len(read), f"@{template.domain}", read)
            return plan
        conn.exec_driver_sql(_DROP_STAGE)
        recipients = _decode(read)
    else:
        recipients = _live_recipients(conn, site)
    holders = _holders(conn, template.domain)
    if drop_old:  # old primaries are released by this run, so they are free to be reused
        for recipient in recipients:
            for text in recipient[4].get("proxies", []):
                if text.startswith("SMTP:"):
                    holders.pop(text[5:].lower(), None)
    expand = template.expander()
    names = template.uses_names
    domain = template.domain
    rows = plan.rows
    for recipient in recipients:
        guid, _, alias, display_name, attrs, _, _, _ = recipient
        if names:
            local = expand(
                alias,
                str(attrs.get("given_name", "")),
                str(attrs.get("surname", "")),
                str(attrs.get("initials", "")),
                display_name,
            )
        else:
            local = expand(alias, "", "", "", display_name)
        given = wanted = f"{local}@{domain}"
        key = given.lower()
        if holders.get(key, guid) != guid:
            counter = 1
            while holders.get(key, guid) != guid:
                counter += 1
                given = template.numbered(local, counter)
                key = given.lower()
            holder = _describe(conn, holders[wanted.lower()])
            plan.collisions.append(Collision(alias, wanted, given, holder))
        holders[key] = guid  # taken for the recipients after this one
        rows.append(_readdress(recipient, given, key, drop_old))
    return plan


def _readdress(recipient: _Row, new_primary: str, new_key: str, drop_old: bool) -> _Planned:
    # Plain string work on `SMTP:addr` / `smtp:addr` entries: this runs once per recipient.
    old_proxies = recipient[4].get("proxies", [])
    proxies = [f"SMTP:{new_primary}"]
    old_primary, promoted = "", False
    released: tuple[str, ...] = ()
    demoted: tuple[str, ...] = ()
    for text in old_proxies:
        prefix, _, address = text.partition(":")
        key = address.lower()
        if prefix == "SMTP":
            demoted = (*demoted, key)
            if not old_primary:
                old_primary = address
        if key == new_key:
            promoted = True  # promoted (or unchanged)
        elif prefix == "SMTP":  # the old primary
            if drop_old:
                released = (*released, key)
            else:
                proxies.append(f"smtp:{address}")
        else:
            proxies.append(text if prefix == "smtp" else format_proxy(parse_proxy(text)))
    return _Planned(
        *recipient,
        old_primary,
        new_primary,
        proxies,
        promoted,
        released,
        demoted,
        proxies != old_proxies,
    )


def apply_readdress(
    conn: Connection, site: str, plan: ReaddressPlan, now: float, progress: Progress | None = None
) -> int:
    """Write the plan in batches; returns how many recipients changed.

    The index is updated, not rebuilt. Released old primaries (drop_old) are deleted first, all
    of them, since an address one recipient gives up may go to another in an earlier batch.
    Then per batch: the SMTP primaries of its recipients are demoted, each new primary is
    inserted (or, held already, promoted in place), and the objects are rewritten with
    consecutive USNs. Secondaries that stay are not touched.
    """
    if plan.bulk is not None:
        return _apply_bulk(conn, site, plan.bulk, now, progress)
    changed = [p for p in plan.rows if p.changed]
    if not changed:
        return 0
    first_usn = allocate_usns(conn, site, len(changed))
    writer = _Writer(conn)
    with _bulk_cache(conn, writer.driver):
        released = [(key,) for p in changed for key in p.released]
        for start in range(0, len(released), _BATCH):
            writer.run(_DELETE_PROXY, released[start : start + _BATCH])
        for start in range(0, len(changed), _BATCH):
            batch = changed[start : start + _BATCH]
            _write_batch(writer, batch, first_usn + start, now)
            if progress is not None:
                progress(len(batch))
    return len(changed)


_BULK_CACHE_KIB = 262_144


@contextmanager
def _bulk_cache(conn: Connection, sqlite: bool) -> Iterator[None]:
    """On SQLite, a page cache of up to 256 MiB while the plan is written (pages are allocated
    only as used): rewriting 100,000 objects dirties more pages than the usual 32 MiB hold, and
    a full cache spills them into the WAL before the commit, some twice. The connection's own
    setting is restored afterwards (it goes back to the pool)."""
    if not sqlite:
        yield
        return
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
    conn.exec_driver_sql(f"PRAGMA cache_size=-{_BULK_CACHE_KIB}")
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size={int(before)}")


def _write_batch(writer: _Writer, batch: Sequence[_Planned], first_usn: int, now: float) -> None:
    objects: list[tuple[Any, ...]] = []
    demoted: list[tuple[Any, ...]] = []
    promoted: list[tuple[Any, ...]] = []
    added: list[tuple[Any, ...]] = []
    driver = writer.driver
    usn = first_usn
    for change in batch:
        guid = change.guid
        address = change.new_primary
        key = address.lower()
        if driver:  # only the proxies are sent: SQLite sets them into the stored JSON
            proxies: Any = _json_strings(change.new_proxies)
        else:
            proxies = {**change.attrs, "proxies": change.new_proxies}
        objects.append((proxies, usn, change.version + 1, now, change.ref))
        usn += 1
        demoted.extend((k, guid) for k in change.demoted)
        if change.promoted:
            promoted.append((address, True, key))
        else:
            domain = address.rpartition("@")[2].lower()
            added.append((key, address, domain, guid, "SMTP", True))
    added.sort()  # by primary key: neighbouring keys go to the same index pages
    writer.run(_DEMOTE, demoted)
    writer.run(_PROMOTE, promoted)
    writer.run(_INSERT_PROXY, added)
    writer.run(_SET_PROXIES_BY_ROWID if driver else _UPDATE_OBJECT, objects)


def _json_strings(values: list[str]) -> str:
    """`json.dumps(values)` for a list of strings, without its per-call setup when no string
    needs escaping (the usual proxy address)."""
    if all(map(_json_plain, values)):
        return '["' + '", "'.join(values) + '"]'
    return json.dumps(values)


def _json_plain(value: str) -> bool:
    """Whether `value` is the same inside JSON quotes: printable ASCII, no quote or backslash."""
    return value.isascii() and value.isprintable() and '"' not in value and "\\" not in value


class _Writer:
    """Runs a statement once per row of positional parameters (its bind names, in order).

    On SQLite the rows go straight to the DBAPI's executemany: at 100,000 rows SQLAlchemy's
    per-row parameter processing costs more than SQLite's own work (JSON is encoded by the
    caller). Other databases take the ordinary path, which serialises JSON and adapts types.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.driver = _driver_path(conn)
        self._sql: dict[int, str] = {}

    def run(self, statement: _Statement, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        dml, names = statement
        if not self.driver:
            self.conn.execute(dml, [dict(zip(names, row, strict=True)) for row in rows])
            return
        sql = self._sql.get(id(dml))
        if sql is None:
            compiled = dml.compile(dialect=self.conn.dialect)
            if tuple(compiled.positiontup or ()) != names:
                raise AssertionError(f"bind order {compiled.positiontup} is not {names}")
            sql = self._sql[id(dml)] = str(compiled)
        self.conn.exec_driver_sql(sql, rows)


# A statement and the names of its bind parameters in positional (SQLite) order.
_Statement = tuple[UpdateBase, tuple[str, ...]]

_OBJECT_VALUES = {
    "attrs": bindparam("attrs", type_=dir_object.c.attrs.type),
    "usn_changed": bindparam("usn_changed"),
    "version": bindparam("version"),
    "changed_at": bindparam("changed_at"),
}
_OBJECT_NAMES = ("attrs", "usn_changed", "version", "changed_at")
_UPDATE_OBJECT: _Statement = (
    update(dir_object).where(dir_object.c.guid == bindparam("b_ref")).values(_OBJECT_VALUES),
    (*_OBJECT_NAMES, "b_ref"),
)
_SET_PROXIES_BY_ROWID: _Statement = (  # SQLite: only the proxies change in the stored JSON
    update(dir_object)
    .where(literal_column("rowid") == bindparam("b_ref"))
    .values(
        _OBJECT_VALUES
        | {
            "attrs": func.json_set(
                dir_object.c.attrs, literal_column("'$.proxies'"), func.json(bindparam("attrs"))
            )
        }
    ),
    (*_OBJECT_NAMES, "b_ref"),
)
_DEMOTE: _Statement = (
    update(proxy_address)
    .where(
        proxy_address.c.address_key == bindparam("b_key"),
        proxy_address.c.guid == bindparam("b_guid"),
        proxy_address.c.type == literal_column("'SMTP'"),
        proxy_address.c.is_primary.is_(True),
    )
    .values(is_primary=false()),
    ("b_key", "b_guid"),
)
_PROMOTE: _Statement = (
    update(proxy_address)
    .where(proxy_address.c.address_key == bindparam("b_key"))
    .values(address=bindparam("address"), is_primary=bindparam("is_primary")),
    ("address", "is_primary", "b_key"),
)
_INSERT_PROXY: _Statement = (
    insert(proxy_address).values(
        {name: bindparam(name) for name in ("address_key", "address", "domain", "guid")}
        | {"type": bindparam("type"), "is_primary": bindparam("is_primary")}
    ),
    ("address_key", "address", "domain", "guid", "type", "is_primary"),
)
_DELETE_PROXY: _Statement = (
    delete(proxy_address).where(proxy_address.c.address_key == bindparam("b_key")),
    ("b_key",),
)


# -- the common case, set-based --------------------------------------------------------------
# A `%m` template that keeps old primaries, on SQLite, when every alias is a plain dot-atom (so
# it is its own local part), no two aliases differ only in case, no new address is held by
# anyone yet (no collision, no promotion) and every proxy list is a plain JSON list of
# `SMTP:`/`smtp:` strings: then each recipient's change is the same string operation, and the
# whole run is done in SQL over a staged table of (creation order, rowid, guid, new address),
# without a parameter per row from Python. Anything else takes the per-recipient plan above;
# both write the same directory (tests/unit/directory/test_readdress.py).

_DROP_STAGE = "DROP TABLE IF EXISTS temp.sitemail_readdress"
_CREATE_STAGE = """CREATE TABLE temp.sitemail_readdress (
    n INTEGER PRIMARY KEY,  -- creation order, from 1: the USN order
    rid INTEGER NOT NULL,  -- the recipient's rowid in dir_object
    guid TEXT NOT NULL,
    key TEXT NOT NULL,  -- the new primary's address key
    address TEXT NOT NULL,  -- the new primary
    proxies TEXT  -- the proxy list as JSON text
)"""
_FILL_STAGE = """INSERT INTO temp.sitemail_readdress (rid, guid, key, address, proxies)
SELECT rowid, guid, lower(name) || ?, name || ?, attrs -> '$.proxies' FROM dir_object
WHERE site = ? AND kind IN (?, ?, ?) AND is_deleted = 0  -- the three of _KINDS
ORDER BY usn_created, rowid"""
_READ_STAGE = """SELECT d.guid, d.kind, d.name, d.display_name, d.attrs, d.usn_changed,
    d.version, d.rowid
FROM temp.sitemail_readdress AS s JOIN dir_object AS d ON d.rowid = s.rid ORDER BY s.n"""
# Whether the new address of a recipient of this site is held already: a collision or a
# promotion. Tombstones are asked too (a false alarm only costs the fast path), so that the
# index on (site, kind, name) answers alone. Stops at the first (a second run, say).
_NEW_KEY_HELD = """SELECT EXISTS (
    SELECT 1 FROM dir_object AS d JOIN proxy_address AS p ON p.address_key = lower(d.name) || ?
    WHERE d.site = ? AND d.kind IN (?, ?, ?)
)"""
# Whether a staged proxy list is not a list of strings each starting `SMTP:` or `smtp:` without
# escapes (so that `"SMTP:` occurs in its text only where an element starts).
_ODD_PROXIES = r"""SELECT EXISTS (
    SELECT 1 FROM temp.sitemail_readdress WHERE NOT coalesce(
        proxies GLOB '[[]"*' AND instr(proxies, '\') = 0 AND NOT EXISTS (
            SELECT 1 FROM json_each(proxies)
            WHERE type != 'text' OR NOT (value GLOB 'SMTP:*' OR value GLOB 'smtp:*')
        ),
        0)
)"""
# Every SMTP primary of the staged recipients becomes a secondary.
_DEMOTE_STAGED = """UPDATE proxy_address SET is_primary = 0 WHERE rowid IN (
    SELECT p.rowid FROM temp.sitemail_readdress AS s JOIN proxy_address AS p ON p.guid = s.guid
    WHERE p.type = 'SMTP' AND p.is_primary = 1
)"""
_INSERT_STAGED = """INSERT INTO proxy_address (address_key, address, domain, guid, type, is_primary)
SELECT key, address, ?, guid, 'SMTP', 1 FROM temp.sitemail_readdress
WHERE n >= ? AND n < ? ORDER BY key"""
# The new list: the new primary, then the old entries in order with `SMTP:` made `smtp:`.
_REWRITE_STAGED = """UPDATE dir_object SET
    attrs = json_set(attrs, '$.proxies', json(
        '["SMTP:' || s.address || '",' || substr(replace(s.proxies, '"SMTP:', '"smtp:'), 2))),
    usn_changed = ? + s.n, version = version + 1, changed_at = ?
FROM temp.sitemail_readdress AS s WHERE dir_object.rowid = s.rid AND s.n >= ? AND s.n < ?"""


def _bulk_path(conn: Connection) -> bool:
    """SQLite from 3.38 (UPDATE ... FROM, the -> operator), through the driver."""
    return _driver_path(conn) and conn.dialect.loaded_dbapi.sqlite_version_info >= (3, 38)


def _stage(conn: Connection, site: str, domain: str) -> list[_TextRow]:
    """Stage the live recipients of `site` with their `%m@domain` address; returns their rows
    as read, in creation order."""
    conn.exec_driver_sql(_DROP_STAGE)
    conn.exec_driver_sql(_CREATE_STAGE)
    conn.exec_driver_sql(_FILL_STAGE, (f"@{domain}".lower(), f"@{domain}", site, *_KINDS))
    cursor = conn.exec_driver_sql(_READ_STAGE).cursor
    assert cursor is not None
    return list(cursor.fetchall())


def _bulk_may_fit(conn: Connection, site: str, template: Template) -> bool:
    """Whether the run may be the common case, before staging it: its addresses can be spliced
    into JSON as they are and none of them is held yet."""
    suffix = f"@{template.domain}"
    if not _json_plain(suffix):
        return False
    held = conn.exec_driver_sql(_NEW_KEY_HELD, (suffix.lower(), site, *_KINDS)).scalar_one()
    return not held


def _staged_fits(conn: Connection, read: Sequence[_TextRow]) -> bool:
    """Whether the staged run is the common case (see above)."""
    aliases = [row[2] for row in read]
    if not all(map(is_plain_local_part, aliases)):
        return False
    if len({alias.lower() for alias in aliases}) != len(aliases):
        return False
    return not conn.exec_driver_sql(_ODD_PROXIES).scalar_one()


def _bulk_rows(bulk: _Bulk) -> list[_Planned]:
    """The per-recipient plan of a staged run (what the SQL writes), for its list of changes."""
    rows = []
    for recipient in _decode(bulk.read):
        address = f"{recipient[2]}{bulk.suffix}"
        rows.append(_readdress(recipient, address, address.lower(), False))
    return rows


def _apply_bulk(
    conn: Connection, site: str, bulk: _Bulk, now: float, progress: Progress | None
) -> int:
    """Write a staged run: demote, then per batch insert the new primaries (in key order) and
    rewrite the objects with consecutive USNs in creation order."""
    if bulk.count:
        usn_before = allocate_usns(conn, site, bulk.count) - 1
        domain = bulk.suffix[1:].lower()
        with _bulk_cache(conn, True):
            conn.exec_driver_sql(_DEMOTE_STAGED)
            for low in range(1, bulk.count + 1, _BATCH):
                high = min(low + _BATCH, bulk.count + 1)
                conn.exec_driver_sql(_INSERT_STAGED, (domain, low, high))
                conn.exec_driver_sql(_REWRITE_STAGED, (usn_before, now, low, high))
                if progress is not None:
                    progress(high - low)
    conn.exec_driver_sql(_DROP_STAGE)
    return bulk.count
