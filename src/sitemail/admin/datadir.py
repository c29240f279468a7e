"""Where the data dir is: the `--data-dir` option, `$SITEMAIL_DATA_DIR`, or the last `init`.

`sitemail init` records its data dir in `$XDG_CONFIG_HOME/sitemail/current` (default
`~/.config/sitemail/current`), so that later commands on the same machine find "the current
server's" data dir without repeating the option.
"""

from __future__ import annotations

import os
from pathlib import Path

from sitemail.core.errors import ConfigError

__all__ = ["pointer_file", "remember_data_dir", "resolve_data_dir"]

ENV_VAR = "SITEMAIL_DATA_DIR"


def pointer_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sitemail" / "current"


def resolve_data_dir(option: Path | None) -> Path:
    if option is not None:
        return option.resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).resolve()
    pointer = pointer_file()
    if pointer.is_file():
        text = pointer.read_text(encoding="utf-8").strip()
        if text:
            return Path(text)
    raise ConfigError(
        f"no data dir given: pass --data-dir, set ${ENV_VAR}, or create one with `sitemail init`"
    )


def remember_data_dir(data_dir: Path) -> None:
    pointer = pointer_file()
    try:
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.write_text(f"{data_dir.resolve()}\n", encoding="utf-8")
    except OSError:
        pass  # a read-only home only costs the convenience default
