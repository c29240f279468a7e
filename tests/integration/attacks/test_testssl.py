"""testssl.sh against every TLS port of a running site on 127.27.0.50 (issue 19's acceptance).

SMTP with STARTTLS (the MX port, 25 in production), submission with STARTTLS (587) and implicit
TLS (465), IMAPS (993), POP3S (995) and the admin port with `[admin] tls = true`, all at once,
each with testssl.sh's fast mode and the checks that say whether the TLS is sound: protocols,
cipher categories, forward secrecy, the server's preferences, the certificate, the known
vulnerabilities, and on the admin port the HTTP security headers. The site runs a certificate
of a test CA (installed with `sitemail tls set`; testssl.sh is given the CA with `--add-ca`),
as a real site runs a CA-issued one: the self-signed default is the doctor's warning, not a
TLS weakness to report here. No finding may be rated MEDIUM or worse.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.certs import make_pair
from tests.support.clientsite import ClientSite, client_site

ADDRESS = "127.27.0.50"
SITEMAIL = Path(sys.executable).parent / "sitemail"
TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")
BAD = {"MEDIUM", "HIGH", "CRITICAL"}
CHECKS = ["-p", "-s", "-f", "-P", "-S", "-U"]
# Each port: (the site's port name, the STARTTLS protocol or "" for implicit TLS, extra checks)
TARGETS = {
    "smtp-25": ("smtp", "smtp", []),
    "submission-587": ("submission", "smtp", []),
    "submissions-465": ("submissions", "", []),
    "imaps-993": ("imaps", "", []),
    "pop3s-995": ("pop3s", "", []),
    "admin-https": ("admin", "", ["-h"]),
}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),  # six testssl.sh runs at once: about 2 minutes on 2 busy cores
    pytest.mark.skipif(
        TESTSSL is None and not os.environ.get("CI"),
        reason="testssl.sh is not installed (scripts/test-deps.sh installs it)",
    ),
]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[ClientSite]:
    with client_site(tmp_path, ADDRESS, admin={"tls": True}) as running:
        ca = make_pair(tmp_path, "sitemail-test-ca", is_ca=True, days=30)
        leaf = make_pair(tmp_path, "servera.sitea.example.com", addresses=(ADDRESS,), ca=ca)
        installed = subprocess.run(
            [SITEMAIL, "tls", "set", "--cert", leaf.cert, "--key", leaf.key],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "SITEMAIL_DATA_DIR": str(running.data_dir)},
        )
        assert installed.returncode == 0, installed.stderr
        (tmp_path / "ca.pem").write_bytes(ca.cert.read_bytes())
        yield running


def command(site: ClientSite, name: str, out: Path, ca: Path) -> list[str]:
    port_name, starttls, extra = TARGETS[name]
    assert TESTSSL is not None, "testssl.sh is not installed: run scripts/test-deps.sh"
    args = [TESTSSL, "--quiet", "--color", "0", "--warnings", "off", "--nodns", "none"]
    args += ["--fast", "--add-ca", str(ca), "--jsonfile", str(out)]
    args += ["--connect-timeout", "10", "--openssl-timeout", "10"]
    if starttls:
        args += ["-t", starttls]
    return [*args, *CHECKS, *extra, f"{site.address}:{site.ports[port_name]}"]


def test_testssl_finds_nothing_medium_or_worse_on_any_tls_port(
    site: ClientSite, tmp_path: Path
) -> None:
    """testssl.sh on 25 and 587 (STARTTLS), 465, 993, 995 and the admin port over TLS, run
    in parallel and bounded: every check ran, and none is rated MEDIUM, HIGH or CRITICAL."""
    ca = tmp_path / "ca.pem"
    runs = {}
    for name in TARGETS:
        out = tmp_path / f"{name}.json"
        runs[name] = (
            out,
            subprocess.Popen(
                command(site, name, out, ca),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
    bad: list[str] = []
    for name, (out, process) in runs.items():
        try:
            text, _ = process.communicate(timeout=480)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        findings = json.loads(out.read_text())
        ids = {f["id"] for f in findings}
        assert {"TLS1_2", "TLS1_3", "cipher_order", "cert_trust", "heartbleed"} <= ids, text
        bad += [
            f"{name}: {f['severity']} {f['id']}: {f['finding']}"
            for f in findings
            if f["severity"] in BAD
        ]
        print(name, sorted({f["severity"] for f in findings}))
    assert bad == []
