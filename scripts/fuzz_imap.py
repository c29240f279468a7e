"""Long fuzz run of the IMAP engine's parsers (issue 18): inputs tried and failures found.

The same properties as tests/unit/imap/test_fuzz.py (tests/support/imapfuzz.py), for as many
inputs as asked (default 1,000,000 per parser; target 0 failures). Hypothesis generates
them, random bytes and near-valid IMAP commands and MIME messages alike; a failure is shrunk
to its smallest form and printed. The run is split over `--jobs` processes, each with its own
seed, and each Hypothesis example is a batch of `--batch` inputs, so that the engine's cost
per example is paid once per batch; `--max-seconds` bounds the wall time whatever happens
(a run cut short reports what it tried). From the repository root:

    .venv/bin/python scripts/fuzz_imap.py                       # 1,000,000 each
    .venv/bin/python scripts/fuzz_imap.py --inputs 20000 --only command

Last long runs (2 cores shared with other work, load 17-27; docs/client-access.md, "Fuzzing"):

    .venv/bin/python scripts/fuzz_imap.py --only command --jobs 2 --max-seconds 3600
    command: 1000000 inputs tried in 2423 s, failures: 0; seeds 0-1
    .venv/bin/python scripts/fuzz_imap.py --only message --jobs 2 --max-seconds 3540
    message: 127210 inputs tried in 3542 s, failures: 0 (stopped at the bound); seeds 0-1
    .venv/bin/python scripts/fuzz_imap.py --only message --jobs 2 --seed 2 --max-seconds 1680
    message: 67700 inputs tried in 1680 s, failures: 0 (stopped at --max-seconds); seeds 2-3
    .venv/bin/python scripts/fuzz_imap.py --only message --jobs 2 --seed 4 --max-seconds 840
    message: 141880 inputs tried in 840 s, failures: 0 (stopped at --max-seconds); seeds 4-5
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from tests.support.imapfuzz import check_command, check_message, commands, messages

TARGETS: dict[str, tuple[Callable[[], st.SearchStrategy[bytes]], Callable[[bytes], None]]] = {
    "command": (commands, check_command),
    "message": (messages, check_message),
}


class _OutOfTime(BaseException):
    """Raised inside the property when the wall-time bound is reached: a BaseException, so
    Hypothesis lets it through at once instead of shrinking it as a failure."""


def run(
    name: str, inputs: int, batch: int, job: int, deadline: float
) -> tuple[int, str | None, bool]:
    """(inputs tried, the failure found or None, whether the time bound cut it short) for one
    parser in one process; `job` seeds Hypothesis, so other --seed values try other inputs."""
    strategy, check = TARGETS[name]
    tried = 0

    @seed(job)
    @settings(
        max_examples=max(1, -(-inputs // batch)),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(strategy(), min_size=batch, max_size=batch))
    def prop(datas: list[bytes]) -> None:
        nonlocal tried
        if time.time() > deadline:
            raise _OutOfTime
        for data in datas:
            tried += 1
            check(data)

    try:
        prop()
    except _OutOfTime:
        return tried, None, True
    except Exception as exc:
        return tried, f"{type(exc).__name__}: {exc}", False
    return tried, None, False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="per parser")
    parser.add_argument("--only", choices=sorted(TARGETS))
    parser.add_argument("--jobs", type=int, default=2, help="processes per parser")
    parser.add_argument("--batch", type=int, default=10, help="inputs per Hypothesis example")
    parser.add_argument("--max-seconds", type=float, default=7200, help="wall-time bound")
    parser.add_argument("--seed", type=int, default=0, help="first seed (one per process)")
    args = parser.parse_args()
    deadline = time.time() + args.max_seconds
    names = [args.only] if args.only else sorted(TARGETS)
    share = -(-args.inputs // args.jobs)
    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=args.jobs * len(names)) as pool:
        futures = {
            name: [
                pool.submit(run, name, share, args.batch, job, deadline) for job in range(args.jobs)
            ]
            for name in names
        }
        failed = 0
        for name, jobs in futures.items():
            results = [future.result() for future in jobs]
            tried = sum(count for count, _, _ in results)
            failures = [failure for _, failure, _ in results if failure]
            failed += len(failures)
            seconds = time.monotonic() - started
            cut = " (stopped at --max-seconds)" if any(late for _, _, late in results) else ""
            print(
                f"{name}: {tried} inputs tried in {seconds:.0f} s, failures: {len(failures)}"
                f"{cut}; seeds {args.seed}-{args.seed + args.jobs - 1}"
            )
            for failure in failures:
                print(f"  {failure}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
