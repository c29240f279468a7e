"""Backup and restore of a data dir while its server serves.

One job: `backup` copies a site into a new directory: the store as one consistent snapshot
(SQLite's online backup API in a single step, one read transaction: a WAL reader that never
stops the server's writers; PostgreSQL: `pg_dump`, also one snapshot), then the keys, the
certificate, the admin token, sitemail.toml and the delivery journal, and last a manifest
(what, when, SHA-256 of every file). Every message acknowledged (250) before the backup
started was committed before its snapshot, so the copy holds it; mail that arrives while it
runs may or may not be in it. The delivery journal is copied after the snapshot: deliveries
it notes past the snapshot are recorded at the restored server's start, not sent again.
`restore` checks the manifest first, refuses a data dir whose server is running, and any
non-empty directory, then writes the files (as root: owned by [server] user).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sitemail import __version__
from sitemail.admin.filemodes import DB_FILE
from sitemail.admin.privileges import hand_over
from sitemail.admin.wake import open_wake_socket
from sitemail.config import ServerConfig, load_config
from sitemail.core.errors import (
    ConflictError,
    InvalidValueError,
    NotFoundError,
    StoreError,
    UsageError,
)

__all__ = ["MANIFEST", "BackupReport", "backup", "restore"]

MANIFEST = "manifest.json"
DUMP_FILE = "database.dump"  # PostgreSQL's, in pg_dump's custom format
_FORMAT = 1
# Not copied: the database's own files (the snapshot stands for them) and messages that were
# still arriving (never acknowledged: a crash would drop them too).
_SKIPPED = {DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm", DB_FILE + "-journal", "incoming"}


@dataclass(frozen=True, slots=True)
class BackupReport:
    destination: Path
    started: str  # ISO 8601, UTC: what was acknowledged before this is in the copy
    files: int
    size: int  # bytes


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _empty_dir(path: Path, what: str) -> None:
    """Create `path` (0700) or accept it empty; anything in it is refused."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConflictError(f"{what} {path} is not empty: choose a new or empty directory")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def backup(config: ServerConfig, destination: Path) -> BackupReport:
    """Copy the site of `config` into `destination` (new or empty), as the module says."""
    data_dir = config.data_dir.resolve()
    if destination == data_dir or data_dir in destination.parents:
        raise UsageError(f"backup destination {destination} is inside the data dir {data_dir}")
    _empty_dir(destination, "backup destination")
    started = _now()
    database = _snapshot(config, destination)
    for source in sorted(config.data_dir.rglob("*")):
        relative = source.relative_to(config.data_dir)
        if relative.parts[0] in _SKIPPED or not source.is_file():
            continue
        target = destination / relative
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # a journal file done meanwhile
            shutil.copy2(source, target)
    copied = [p for p in sorted(destination.rglob("*")) if p.is_file()]
    size = sum(p.stat().st_size for p in copied)
    files = {
        p.relative_to(destination).as_posix(): {"sha256": _sha256(p), "size": p.stat().st_size}
        for p in copied
    }
    manifest = {
        "format": _FORMAT,
        "sitemail": __version__,
        "started": started,
        "finished": _now(),
        "data_dir": str(config.data_dir),
        "server": config.server,
        "site": config.site,
        "database": database,
        "files": files,
    }
    (destination / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return BackupReport(destination, started, len(files), size)


def _snapshot(config: ServerConfig, destination: Path) -> str:
    """The store's consistent copy in `destination`; which kind of database it is."""
    if config.database_url:
        _pg_dump(config.database_url, destination / DUMP_FILE)
        return "postgresql"
    source_path = config.data_dir / DB_FILE
    if not source_path.is_file():
        raise NotFoundError(f"{source_path} not found: is {config.data_dir} a data dir?")
    source = sqlite3.connect(source_path, timeout=30)
    target = sqlite3.connect(destination / DB_FILE)
    try:
        source.backup(target)  # pages=-1: every page in one step, one read transaction
    except sqlite3.Error as exc:
        raise StoreError(f"backup of {source_path} failed: {exc}") from exc
    finally:
        target.close()
        source.close()
    return "sqlite"


def _libpq_url(url: str) -> str:
    """SQLAlchemy's URL ("postgresql+psycopg://...") as libpq's."""
    scheme, sep, rest = url.partition("://")
    return scheme.split("+", 1)[0] + sep + rest


def _pg_dump(url: str, target: Path) -> None:
    _run_pg(["pg_dump", "--format=custom", "--no-owner", f"--file={target}", _libpq_url(url)])


def _run_pg(command: list[str]) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    except OSError as exc:
        raise StoreError(f"cannot run {command[0]} (PostgreSQL's client): {exc.strerror}") from exc
    if done.returncode != 0:
        raise StoreError(f"{command[0]} failed: {done.stderr.strip()}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(source: Path) -> dict[str, object]:
    """The manifest of backup `source`, every file checked against it."""
    try:
        manifest = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NotFoundError(f"{source} is not a sitemail backup (no readable {MANIFEST})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise InvalidValueError(f"{source / MANIFEST}: not a backup manifest of format {_FORMAT}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise InvalidValueError(f"{source / MANIFEST}: no list of files")
    for name, facts in files.items():
        path = source / name
        if not path.is_file() or _sha256(path) != facts.get("sha256"):
            raise InvalidValueError(f"backup file {path} is missing or damaged (checksum)")
    return manifest


def restore(source: Path, data_dir: Path) -> ServerConfig:
    """Restore backup `source` into `data_dir` (not running, new or empty); its config."""
    manifest = _read_manifest(source)
    probe = open_wake_socket(data_dir)
    if probe is None and data_dir.exists():
        raise ConflictError(f"a server is running on {data_dir}: stop it; restore never overwrites")
    if probe is not None:
        probe.close()
    _empty_dir(data_dir, "restore target")
    files = manifest["files"]
    assert isinstance(files, dict)
    for name in files:
        target = data_dir / name
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copy2(source / name, target)
    config = load_config(data_dir)
    if manifest.get("database") == "postgresql":
        _run_pg(
            [
                "pg_restore",
                "--no-owner",
                "--exit-on-error",
                f"--dbname={_libpq_url(config.database_url)}",
                str(data_dir / DUMP_FILE),
            ]
        )
        (data_dir / DUMP_FILE).unlink()
    if os.geteuid() == 0:
        with contextlib.suppress(KeyError):  # no such user yet: root's, until `init`/`serve`
            user = pwd.getpwnam(config.user)
            hand_over(data_dir, user.pw_uid, user.pw_gid)
    return config
