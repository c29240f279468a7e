"""Benchmark: Dovecot's imaptest stress mode against a running sitemail site (issue 18).

imaptest (MIT, by Dovecot's authors) runs `clients` concurrent sessions for `secs` seconds
on one user's mailbox, fed from a small mbox: LOGIN, LIST, STATUS, SELECT, FETCH, STORE,
EXPUNGE, APPEND, LOGOUT at random, checking every answer against what it expects. It prints
the commands done per phase and one `Error:` line per protocol violation; target 0 errors
(Dovecot 2.3.19: 0; sitemail before issue 18: 474 in 60 s). The test suite runs 20 s
(tests/integration/imap/test_imaptest.py); this is the 60 s run.

Loopback only (127.26.0.61), bounded by `secs`, everything stopped on the way out:

    .venv/bin/python bench/imaptest.py                 # 5 clients, 60 s
    .venv/bin/python bench/imaptest.py --clients 10 --secs 120
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.clientsite import PASSWORD, client_site
from tests.support.imaptest import find_or_build, run_imaptest, stress_errors

ADDRESS = "127.26.0.61"
USER = "jsmith@sitea.example.com"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--secs", type=int, default=60)
    args = parser.parse_args()
    tool = find_or_build()
    if tool is None:
        print("imaptest is not built: run scripts/test-deps.sh as root", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, client_site(Path(tmp), ADDRESS) as site:
        site.add_user("jsmith")
        output = run_imaptest(
            tool,
            site.address,
            site.ports["imaps"],
            USER,
            PASSWORD,
            f"mbox={tool.tests / 'default.mbox'}",
            f"clients={args.clients}",
            f"secs={args.secs}",
            timeout=args.secs + 120,
        )
    totals = output[output.find("Totals:") :] if "Totals:" in output else "(no totals)"
    errors = stress_errors(output)
    print(totals.strip())
    for line in errors[:20]:
        print(re.sub(r"\[\d+\]", "", line))
    print(f"clients={args.clients} secs={args.secs} errors={len(errors)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
