"""Directory Replication Connectors: which sites this site pulls its replicas from, and how often.

One job: add, list and remove `replication_connector` objects of this site's naming context.
A connector names the remote site by its directory name, the remote bridgehead server, the
routing address (the domain where the remote site's directory-service mailbox receives mail),
the remote site's public key (pinned: only messages signed with it are believed) and the
schedule. Connectors replicate like any configuration object, so the KCC of the other site can
see whether the reverse connector exists.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, Row, select

from sitemail.core.address import normalize_domain
from sitemail.core.errors import ConflictError, InvalidValueError, NotFoundError
from sitemail.directory import Directory, ObjectKind
from sitemail.directory.objects import insert_object, row_to_recipient, update_object
from sitemail.directory.service import check_name
from sitemail.replication.keys import fingerprint, parse_public_key
from sitemail.store.tables import dir_object

__all__ = [
    "ALWAYS_SECONDS",
    "DEFAULT_SCHEDULE",
    "Connector",
    "add_connector",
    "all_connectors",
    "connector_for",
    "list_connectors",
    "parse_schedule",
    "remove_connector",
    "update_connector",
]

ALWAYS_SECONDS = 15 * 60  # Exchange's "Always": every 15 minutes
DEFAULT_SCHEDULE = "180"  # minutes: Exchange's default of every 3 hours


@dataclass(frozen=True, slots=True)
class Connector:
    site: str  # the remote site's directory name
    bridgehead: str  # the remote server that answers
    routing_address: str  # domain of the remote directory-service mailbox
    peer_key: str  # "ed25519:<base64>"
    schedule: str  # "never", "always" or minutes
    owner: str = ""  # the site whose naming context holds this connector

    @property
    def interval(self) -> float | None:
        """Seconds between scheduled requests; None for "never"."""
        return parse_schedule(self.schedule)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.peer_key)


def parse_schedule(text: str) -> float | None:
    """ "never" -> None, "always" -> 900 s, "<minutes>" (1-10080) -> seconds."""
    value = text.strip().lower()
    if value == "never":
        return None
    if value == "always":
        return float(ALWAYS_SECONDS)
    if value.isdigit() and 1 <= int(value) <= 7 * 24 * 60:
        return int(value) * 60.0
    raise InvalidValueError(
        f"schedule must be 'never', 'always' or minutes between 1 and 10080, got {text!r}"
    )


def _routing_address(text: str) -> str:
    return normalize_domain(text.strip().lstrip("@"))


def _from_object(attrs: dict[str, object], site: str, owner: str) -> Connector:
    return Connector(
        site=site,
        bridgehead=str(attrs.get("bridgehead", "")),
        routing_address=str(attrs.get("routing_address", "")),
        peer_key=str(attrs.get("peer_key", "")),
        schedule=str(attrs.get("schedule", DEFAULT_SCHEDULE)),
        owner=owner,
    )


def add_connector(
    directory: Directory,
    site: str,
    *,
    bridgehead: str,
    routing_address: str,
    peer_key: str,
    schedule: str = DEFAULT_SCHEDULE,
) -> Connector:
    check_name("site name", site)
    check_name("bridgehead server name", bridgehead)
    if site == directory.local_site:
        raise InvalidValueError(f"{site} is this site: a connector joins two different sites")
    if peer_key.strip().startswith("SHA256:"):
        raise InvalidValueError(
            "that is a key fingerprint; --peer-key takes the key itself, the first line "
            "of `sitemail site key` at the other site"
        )
    key = parse_public_key(peer_key).token
    parse_schedule(schedule)
    _check_against_directory(directory, site, key)
    connector = Connector(
        site, bridgehead, _routing_address(routing_address), key, schedule.strip().lower()
    )
    with directory.store.write() as conn:
        if _find(conn, directory.local_site, site) is not None:
            raise ConflictError(f"a replication connector to {site} exists already")
        insert_object(
            conn,
            site=directory.local_site,
            kind=ObjectKind.REPLICATION_CONNECTOR,
            name=site,
            display_name=f"Directory Replication Connector ({directory.local_site} - {site})",
            attrs={
                "bridgehead": connector.bridgehead,
                "routing_address": connector.routing_address,
                "peer_key": connector.peer_key,
                "schedule": connector.schedule,
            },
            now=directory.clock.now(),
        )
    return replace(connector, owner=directory.local_site)


def _check_against_directory(directory: Directory, site: str, key: str) -> None:
    """Refuse what the directory already shows to be wrong: a name that is a known site's
    name in another case, a key that is ours or another connector's, or a key that differs
    from the one a known site publishes (its site object replicates with its key)."""
    sites = {s.alias: s for s in directory.list_objects(ObjectKind.SITE)}
    if site not in sites:
        same = [name for name in sites if name.lower() == site.lower()]
        if same:
            raise InvalidValueError(
                f"no site {site!r}; directory names are case-sensitive: did you mean {same[0]}?"
            )
    own = str(sites[directory.local_site].attrs.get("public_key", ""))
    if key == own:
        raise InvalidValueError("that is this site's own key; use the other site's key")
    for other in list_connectors(directory):
        if other.peer_key == key and other.site != site:
            raise InvalidValueError(f"that key is already pinned for {other.site}")
    published = str(sites[site].attrs.get("public_key", "")) if site in sites else ""
    if published and published != key:
        raise InvalidValueError(
            f"{site} publishes key {fingerprint(published)} in the directory, not "
            f"{fingerprint(key)}: check `sitemail site key` at {site}"
        )


def _find(conn: Connection, owner: str, site: str) -> Row[Any] | None:
    return conn.execute(
        select(dir_object).where(
            dir_object.c.site == owner,
            dir_object.c.kind == str(ObjectKind.REPLICATION_CONNECTOR),
            dir_object.c.name == site,
            dir_object.c.is_deleted.is_(False),
        )
    ).first()


def list_connectors(directory: Directory, owner: str | None = None) -> list[Connector]:
    """This site's connectors (or, with `owner`, another site's, as replicated here)."""
    objects = directory.list_objects(
        ObjectKind.REPLICATION_CONNECTOR, site=owner or directory.local_site
    )
    return [_from_object(o.attrs, o.alias, o.site) for o in objects]


def all_connectors(directory: Directory) -> list[Connector]:
    """Every site's connectors held here (own and replicated), for the KCC."""
    objects = directory.list_objects(ObjectKind.REPLICATION_CONNECTOR)
    return [_from_object(o.attrs, o.alias, o.site) for o in objects]


def connector_for(directory: Directory, site: str) -> Connector | None:
    return next((c for c in list_connectors(directory) if c.site == site), None)


def remove_connector(directory: Directory, site: str) -> Connector:
    with directory.store.write() as conn:
        row = _find(conn, directory.local_site, site)
        if row is None:
            raise NotFoundError(f"no replication connector to {site}")
        obj = row_to_recipient(row)
        update_object(conn, obj, now=directory.clock.now(), attrs={}, is_deleted=True)
    return _from_object(obj.attrs, obj.alias, obj.site)


def update_connector(
    directory: Directory,
    site: str,
    *,
    bridgehead: str | None = None,
    routing_address: str | None = None,
    schedule: str | None = None,
) -> Connector:
    """Change this site's connector to `site` (None: leave as is). The pinned key is not
    changed here on purpose: a new key is a new trust decision (remove, then add)."""
    if bridgehead is not None:
        check_name("bridgehead server name", bridgehead)
    if schedule is not None:
        parse_schedule(schedule)
    address = _routing_address(routing_address) if routing_address is not None else None
    with directory.store.write() as conn:
        row = _find(conn, directory.local_site, site)
        if row is None:
            raise NotFoundError(f"no replication connector to {site}")
        obj = row_to_recipient(row)
        attrs = dict(obj.attrs)
        for name, value in (
            ("bridgehead", bridgehead),
            ("routing_address", address),
            ("schedule", schedule.strip().lower() if schedule is not None else None),
        ):
            if value is not None:
                attrs[name] = value
        update_object(conn, obj, now=directory.clock.now(), attrs=attrs)
    return _from_object(attrs, obj.alias, obj.site)
