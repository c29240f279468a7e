"""Run `sitemail serve` once as a separate process, for tests of how it fails to start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def serve_command(data_dir: Path) -> list[str]:
    """`sitemail serve -D data_dir` with this interpreter (no console script needed)."""
    return [
        sys.executable,
        "-c",
        "from sitemail.main import main; main()",
        "serve",
        "-D",
        str(data_dir),
    ]


def serve_until_it_exits(data_dir: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`sitemail serve -D data_dir` with this interpreter; its exit status and output (for a
    configuration it must refuse: it would otherwise run until `timeout`)."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from sitemail.main import main; main()",
            "serve",
            "-D",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def configure(data_dir: Path, tables: dict[str, str]) -> None:
    """Add settings at the top of tables of data_dir's sitemail.toml (ports, mostly)."""
    path = data_dir / "sitemail.toml"
    text = path.read_text()
    for table, settings in tables.items():
        text = text.replace(f"\n[{table}]\n", f"\n[{table}]\n{settings}\n", 1)
    path.write_text(text)
