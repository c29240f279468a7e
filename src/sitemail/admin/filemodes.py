"""Who may read a data dir's secrets: the data dir 0700, every file holding a secret 0600.

One job: name the files that hold secrets (the SQLite database with its -wal, -shm and
-journal files: password hashes and every message; the site's signing key; the admin token;
the TLS key; sitemail.toml, which may hold the database's password), make them private whatever the umask (`secure`, at `sitemail init`), and say
which are not, with the command that fixes it (`problems`, for `serve` and `doctor`).
SQLite creates its -wal and -shm files with the database file's own mode, so a database made
0600 keeps them 0600 under any umask; a database made by an older version stays as it was
until the administrator runs the fix: the server warns, it does not change modes behind the
administrator's back.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from sitemail.admin.token import METRICS_TOKEN_FILE, TOKEN_FILE
from sitemail.config import CONFIG_FILE, ServerConfig
from sitemail.mailauth.dkimkeys import dkim_key_files
from sitemail.replication.keys import KEY_FILE

__all__ = ["DB_FILE", "ModeProblem", "create_private", "problems", "secret_files", "secure"]

DB_FILE = "sitemail.db"
_DB_COMPANIONS = ("", "-wal", "-shm", "-journal")
DIR_MODE = 0o700
FILE_MODE = 0o600


@dataclass(frozen=True, slots=True)
class ModeProblem:
    path: Path
    mode: int  # the permission bits found
    wanted: int

    @property
    def message(self) -> str:
        kind = "directory" if self.wanted == DIR_MODE else "file"
        return (
            f"{kind} {self.path} is mode {self.mode:04o}: other local users can read it "
            f"(it should be {self.wanted:04o})"
        )

    @property
    def fix(self) -> str:
        return f"chmod {self.wanted:o} {self.path}"


def secret_files(config: ServerConfig) -> list[Path]:
    """The files holding secrets, whether they exist yet or not."""
    files = [config.data_dir / CONFIG_FILE, config.data_dir / TOKEN_FILE]
    files.append(config.data_dir / METRICS_TOKEN_FILE)
    files.append(config.data_dir / KEY_FILE)
    files += dkim_key_files(config.data_dir)
    files.append(config.path(config.tls.key_file))
    if not config.database_url:  # SQLite in the data dir (PostgreSQL guards its own files)
        files += [config.data_dir / (DB_FILE + suffix) for suffix in _DB_COMPANIONS]
    return files


def _dirs(config: ServerConfig) -> list[Path]:
    """The data dir, and the directories inside it that hold secret files."""
    inside = {p.parent for p in secret_files(config) if p.parent != config.data_dir}
    return [config.data_dir, *sorted(d for d in inside if config.data_dir in d.parents)]


def create_private(path: Path) -> None:
    """Create an empty file mode 0600 if there is none (before SQLite makes it 0644)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))


def secure(config: ServerConfig) -> None:
    """Make the data dir 0700 and every existing secret file 0600 (at `sitemail init`)."""
    for directory in _dirs(config):
        if directory.is_dir():
            directory.chmod(DIR_MODE)
    for path in secret_files(config):
        with contextlib.suppress(FileNotFoundError):
            path.chmod(FILE_MODE)


def problems(config: ServerConfig) -> list[ModeProblem]:
    """Each directory or secret file that others than the server's user may read or write."""
    found: list[ModeProblem] = []
    for path, wanted in [(d, DIR_MODE) for d in _dirs(config)] + [
        (f, FILE_MODE) for f in secret_files(config)
    ]:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
        if mode & 0o077:  # any bit for group or others
            found.append(ModeProblem(path, mode, wanted))
    return found
