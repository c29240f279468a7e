"""Dovecot's imaptest against a running site: the scripted compliance groups and stress.

The site listens with implicit TLS (the 993 listener, on a free port of 127.26.0.21);
imaptest logs in as one user and creates its own mailboxes. The scripted run may fail only
the groups listed in imaptest_known_failures.txt (empty: all 71 pass, as with Dovecot), and
the ESEARCH and CONDSTORE groups must really run (not be skipped for a missing capability); the
stress run (5 clients, a small mbox) must report no error. The 60-second stress run is
bench/imaptest.py. Skipped when imaptest cannot be built here (scripts/test-deps.sh builds
it as root).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.clientsite import PASSWORD, ClientSite, client_site
from tests.support.imaptest import (
    Imaptest,
    failed_groups,
    find_or_build,
    run_imaptest,
    stress_errors,
)

ADDRESS = "127.26.0.21"
USER = "jsmith@sitea.example.com"
KNOWN = Path(__file__).with_name("imaptest_known_failures.txt")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def imaptest() -> Imaptest:
    tool = find_or_build()
    if tool is None:
        pytest.skip("imaptest is not built (scripts/test-deps.sh builds it as root)")
    return tool


@pytest.fixture
def site(tmp_path: Path) -> Iterator[ClientSite]:
    with client_site(tmp_path, ADDRESS) as running:
        running.add_user("jsmith")
        yield running


def known_failures() -> set[str]:
    lines = KNOWN.read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


@pytest.mark.timeout(600)
def test_imaptest_scripted_groups_fail_no_more_than_known(
    imaptest: Imaptest, site: ClientSite
) -> None:
    """Every scripted group passes but the known ones; a known one that passes must go."""
    output = run_imaptest(
        imaptest,
        site.address,
        site.ports["imaps"],
        USER,
        PASSWORD,
        f"test={imaptest.tests}",
        timeout=500,
    )
    groups, failed = failed_groups(output)
    assert groups >= 71, output[-2000:]
    known = known_failures()
    assert failed <= known, f"new failures {sorted(failed - known)}:\n{output[-4000:]}"
    assert not known - failed, f"passing now, remove from {KNOWN.name}: {sorted(known - failed)}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("group", ["esearch", "esearch-condstore"])
def test_imaptest_extension_groups_run_and_pass(
    imaptest: Imaptest, site: ClientSite, group: str
) -> None:
    """The groups gated on ESEARCH and CONDSTORE run (imaptest skips a group silently, as
    0/0 commands, when a capability is missing) and none of their commands fails."""
    output = run_imaptest(
        imaptest,
        site.address,
        site.ports["imaps"],
        USER,
        PASSWORD,
        f"test={imaptest.tests / group}",
        timeout=200,
    )
    groups, failed = failed_groups(output)
    assert (groups, failed) == (1, set()), output[-2000:]
    ran = re.search(r"^extensions: 0/(\d+) individual commands failed", output, re.MULTILINE)
    assert ran is not None, output[-2000:]
    assert int(ran.group(1)) > 0, output[-2000:]


@pytest.mark.timeout(300)
def test_imaptest_stress_reports_no_error(imaptest: Imaptest, site: ClientSite) -> None:
    """5 clients for 20 s on a small mbox (select, fetch, store, expunge, append): 0 errors."""
    output = run_imaptest(
        imaptest,
        site.address,
        site.ports["imaps"],
        USER,
        PASSWORD,
        f"mbox={imaptest.tests / 'default.mbox'}",
        "clients=5",
        "secs=20",
        timeout=200,
    )
    assert "Totals:" in output, output[-2000:]
    assert stress_errors(output) == [], output[-4000:]
