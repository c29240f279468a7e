"""Which site a command acts on: the context line, and the warning when it is another site.

One job: tell the person at the terminal where a command acted. Every command that opens a
data dir prints one line on stderr, `sitemail: SiteA (server ServerA, data dir /x/y)`, and
records that site in `$XDG_CONFIG_HOME/sitemail/last`; when the previous command acted on
another site (another name, or another site of the same name: another database), a warning
names both. Two servers of one site (one shared database) are the same site: no warning.
The record holds no secret: the database is kept as a digest of its URL.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from sitemail.admin.datadir import state_dir
from sitemail.config import ServerConfig
from sitemail.store import default_url

__all__ = ["SiteContext", "context_line", "note_site", "switch_warning"]

LAST_FILE = "last"


@dataclass(frozen=True, slots=True)
class SiteContext:
    """What a command acted on: names, data dir, and its database's identity."""

    site: str
    server: str
    data_dir: str
    database: str  # a digest of the database URL: one site's servers share it

    @classmethod
    def of(cls, config: ServerConfig) -> SiteContext:
        url = config.database_url or default_url(config.data_dir)
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        return cls(config.site, config.server, str(config.data_dir), digest)

    def describe(self) -> str:
        return f"{self.site} (server {self.server}, data dir {self.data_dir})"

    def same_site(self, other: SiteContext) -> bool:
        return self.site == other.site and self.database == other.database


def context_line(context: SiteContext) -> str:
    return f"sitemail: {context.describe()}"


def switch_warning(now: SiteContext, before: SiteContext | None) -> str | None:
    """The warning when this command acts on another site than the previous one did."""
    if before is None or now.same_site(before):
        return None
    other = "another site named " if now.site == before.site else ""
    return (
        f"warning: this command acted on {other}{now.describe()}; the previous one acted on "
        f"{before.describe()} (`sitemail where` shows the default, `sitemail use DIR` sets it)"
    )


def _last_file() -> Path:
    return state_dir() / LAST_FILE


def _read_last() -> SiteContext | None:
    try:
        data = json.loads(_last_file().read_text(encoding="utf-8"))
        return SiteContext(**data)
    except (OSError, ValueError, TypeError):
        return None  # no record (or a damaged one): nothing to compare with


def _write_last(context: SiteContext) -> None:
    """Atomically (a temporary file renamed over the record): commands run side by side."""
    folder = _last_file().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".last.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(context), handle)
        Path(tmp).replace(_last_file())
    except OSError:
        pass  # a read-only home only costs the warning of the next command


def note_site(config: ServerConfig) -> tuple[str, str | None]:
    """Record that a command acts on `config`'s site; its context line, and the warning
    when the previous command acted on another site."""
    now = SiteContext.of(config)
    warning = switch_warning(now, _read_last())
    _write_last(now)
    return context_line(now), warning
