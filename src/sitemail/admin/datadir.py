"""Where the data dir is: the `--data-dir` option, `$SITEMAIL_DATA_DIR`, or the per-user
default that `sitemail use` (or the first `sitemail init`) sets.

The default is recorded in `$XDG_CONFIG_HOME/sitemail/current` (default
`~/.config/sitemail/current`), so that later commands on the same machine find "the current
server's" data dir without repeating the option. A later `init` does not move it: only
`sitemail use DIR` (or `lab up`, which says so) does, so that creating a second server never
silently changes where the next command acts (admin/context.py says where that is).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sitemail.config import CONFIG_FILE
from sitemail.core.errors import ConfigError

__all__ = [
    "DataDirChoice",
    "choose_data_dir",
    "pointer_file",
    "read_pointer",
    "remember_data_dir",
    "resolve_data_dir",
    "state_dir",
]

ENV_VAR = "SITEMAIL_DATA_DIR"


@dataclass(frozen=True, slots=True)
class DataDirChoice:
    """A data dir and what chose it: "--data-dir", "$SITEMAIL_DATA_DIR" or "sitemail use"."""

    path: Path
    source: str


def state_dir() -> Path:
    """The per-user folder of the CLI's small records (the default, the last site used)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sitemail"


def pointer_file() -> Path:
    return state_dir() / "current"


def read_pointer() -> Path | None:
    """The per-user default data dir, if one is recorded."""
    pointer = pointer_file()
    try:
        text = pointer.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return Path(text) if text else None


def choose_data_dir(option: Path | None) -> DataDirChoice:
    if option is not None:
        return DataDirChoice(option.resolve(), "--data-dir")
    env = os.environ.get(ENV_VAR)
    if env:
        return DataDirChoice(Path(env).resolve(), f"${ENV_VAR}")
    recorded = read_pointer()
    if recorded is not None:
        if not (recorded / CONFIG_FILE).is_file():
            raise ConfigError(
                f"the default data dir {recorded} (recorded in {pointer_file()}) is not a "
                "sitemail data dir any more: choose one with `sitemail use DIR` or --data-dir"
            )
        return DataDirChoice(recorded, "sitemail use")
    raise ConfigError(
        f"no data dir given: pass --data-dir, set ${ENV_VAR}, or choose one with "
        "`sitemail use DIR` (or create one with `sitemail init`)"
    )


def resolve_data_dir(option: Path | None) -> Path:
    return choose_data_dir(option).path


def remember_data_dir(data_dir: Path) -> bool:
    """Make `data_dir` the default; False when the record cannot be written (a read-only
    home only costs the convenience default)."""
    pointer = pointer_file()
    try:
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.write_text(f"{data_dir.resolve()}\n", encoding="utf-8")
    except OSError:
        return False
    return True
