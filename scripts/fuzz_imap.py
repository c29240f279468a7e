"""Long fuzz run of the IMAP engine's parsers (issue 18): inputs tried and failures found.

The same properties as tests/unit/imap/test_fuzz.py (tests/support/imapfuzz.py), for as many
inputs as asked (default 1,000,000 per parser; target 0 failures). Hypothesis generates
them, random bytes and near-valid IMAP commands and MIME messages alike; a failure is shrunk
to its smallest form and printed. From the repository root:

    .venv/bin/python scripts/fuzz_imap.py                       # 1,000,000 each
    .venv/bin/python scripts/fuzz_imap.py --inputs 20000 --only command
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.imapfuzz import check_command, check_message, commands, messages

TARGETS: dict[str, tuple[Callable[[], st.SearchStrategy[bytes]], Callable[[bytes], None]]] = {
    "command": (commands, check_command),
    "message": (messages, check_message),
}


def run(name: str, inputs: int) -> tuple[int, str | None]:
    """(inputs tried, the failure found or None) for one parser."""
    strategy, check = TARGETS[name]
    tried = 0

    @settings(
        max_examples=inputs,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy())
    def prop(data: bytes) -> None:
        nonlocal tried
        tried += 1
        check(data)

    try:
        prop()
    except Exception as exc:
        return tried, f"{type(exc).__name__}: {exc}"
    return tried, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--only", choices=sorted(TARGETS))
    args = parser.parse_args()
    failures = 0
    for name in [args.only] if args.only else sorted(TARGETS):
        started = time.monotonic()
        tried, failure = run(name, args.inputs)
        seconds = time.monotonic() - started
        failures += failure is not None
        print(f"{name}: {tried} inputs tried in {seconds:.0f} s, failures: {int(bool(failure))}")
        if failure:
            print(f"  {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
