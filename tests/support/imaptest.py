"""Dovecot's imaptest (MIT), the IMAP compliance and stress tester, for tests and benches.

Built once per machine by the project's shared build script (`../shared/tools/imaptest/
build.sh` from the repository root, or `$IMAPTEST_BUILD`) into a cache outside the
repository, under the virtualenv (`$IMAPTEST_DIR` overrides it). The build needs root the
first time (it installs Debian's dovecot-dev); scripts/test-deps.sh does it for CI.
`run_imaptest` runs it against a host and port with implicit TLS and returns its output;
`failed_groups` and `stress_errors` read that output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_GROUP_FAILED = re.compile(r"^\*\*\* Test (\S+) ", re.MULTILINE)
_SUMMARY = re.compile(r"^(\d+) test groups: (\d+) failed", re.MULTILINE)


@dataclass(frozen=True)
class Imaptest:
    binary: Path
    tests: Path  # the scripted tests (one file per group, .mbox files beside them)


def imaptest_dir() -> Path:
    return Path(os.environ.get("IMAPTEST_DIR", Path(sys.prefix) / "imaptest"))


def build_script() -> Path:
    return Path(os.environ.get("IMAPTEST_BUILD", REPO.parent / "shared/tools/imaptest/build.sh"))


def find_or_build(timeout: float = 900) -> Imaptest | None:
    """The built imaptest, building it first if the build script is there; None if neither."""
    out = imaptest_dir()
    if not (out / "imaptest").exists() and build_script().exists():
        subprocess.run(
            [str(build_script()), str(out)], check=False, timeout=timeout, capture_output=True
        )
    if not (out / "imaptest").exists():
        return None
    return Imaptest(out / "imaptest", out / "tests")


def run_imaptest(
    tool: Imaptest, host: str, port: int, user: str, password: str, *args: str, timeout: float
) -> str:
    """imaptest's whole output (it reports on stdout and stderr alike)."""
    command = [
        str(tool.binary),
        f"host={host}",
        f"port={port}",
        "ssl=any-cert",
        f"user={user}",
        f"pass={password}",
        *args,
    ]
    done = subprocess.run(
        command, cwd=tool.tests.parent, capture_output=True, text=True, timeout=timeout, check=False
    )
    return done.stdout + done.stderr


def failed_groups(output: str) -> tuple[int, set[str]]:
    """(number of groups run, names of the groups that failed) of a scripted run."""
    summary = _SUMMARY.search(output)
    if summary is None:
        raise AssertionError(f"imaptest gave no summary:\n{output[-2000:]}")
    return int(summary.group(1)), set(_GROUP_FAILED.findall(output))


def stress_errors(output: str) -> list[str]:
    """The error lines of a stress run (imaptest prints one per protocol violation)."""
    return [line for line in output.splitlines() if line.startswith(("Error:", "Panic:", "Fatal:"))]
