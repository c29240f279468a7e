"""The admin port under attack, over real sockets against a site on 127.27.0.x (issue 19).

- Token flood: 100 wrong-token logins at once from one address used to meet no lock-out and
  to hold the API's threads (an authenticated call took 3 s instead of 0.02 s). Now at most
  `max_failures` are answered 401, the rest 429 unchecked, and the administrator's call is
  answered meanwhile.
- Off loopback the admin port needs TLS: `serve` refuses to start otherwise (exit 78, one
  line); with TLS the cookies are `Secure` and a form's Origin must match scheme, host, port.
- `sitemail tls set` on a running server: the next connection gets the new certificate.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from tests.support.certs import make_pair
from tests.support.clientsite import ClientSite, client_site
from tests.support.serve import serve_until_it_exits

from sitemail.admin.service import AdminService

SITEMAIL = Path(sys.executable).parent / "sitemail"
FLOOD_ADDRESS = "127.27.0.30"
TLS_ADDRESS = "127.27.0.31"
MAX_FAILURES = 10


@pytest.fixture
def site(tmp_path: Path) -> Iterator[ClientSite]:
    with client_site(
        tmp_path, FLOOD_ADDRESS, auth={"max_failures": MAX_FAILURES, "failure_delay": 2.0}
    ) as running:
        yield running


@pytest.fixture
def tls_site(tmp_path: Path) -> Iterator[ClientSite]:
    with client_site(tmp_path, TLS_ADDRESS, admin={"tls": True}) as running:
        yield running


def test_admin_console_token_flood_is_locked_out(site: ClientSite) -> None:
    """100 wrong-token console logins at once: at most MAX_FAILURES are answered 401, the
    others 429 without a check, and an API call with the right token is answered meanwhile."""
    base = f"http://{site.address}:{site.ports['admin']}"
    token = site.service.admin_token()

    async def flood() -> tuple[list[int], int, float]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
            guesses = [
                asyncio.ensure_future(http.post("/console/login", data={"token": f"guess{n}"}))
                for n in range(100)
            ]
            await asyncio.sleep(0.5)  # the guesses are in (their answers wait 2 s)
            started = time.monotonic()
            call = await http.get("/api/sites", headers={"Authorization": f"Bearer {token}"})
            took = time.monotonic() - started
            answers = await asyncio.gather(*guesses)
        return [a.status_code for a in answers], call.status_code, took

    statuses, call_status, took = asyncio.run(flood())
    print(f"authenticated call during the flood: {took:.3f} s")
    assert call_status == 200
    assert statuses.count(401) <= MAX_FAILURES
    assert statuses.count(401) + statuses.count(429) == 100
    assert statuses.count(429) >= 100 - MAX_FAILURES


def test_admin_off_loopback_without_tls_refuses_to_start(tmp_path: Path) -> None:
    """[admin] listen on a non-loopback address without tls: serve exits 78 with one error
    line naming the fix, before anything listens."""
    AdminService.init(
        tmp_path / "SiteA",
        org="ExchangeORG",
        site="SiteA",
        server="ServerA",
        domain="sitea.example.com",
        listen=["127.27.0.32"],
    ).close()
    config = tmp_path / "SiteA" / "sitemail.toml"
    config.write_text(config.read_text().replace("[admin]\n", '[admin]\nlisten = "0.0.0.0"\n', 1))
    result = serve_until_it_exits(tmp_path / "SiteA")
    assert result.returncode == 78, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "[admin] tls = true" in errors[0]
    assert "SSH tunnel" in errors[0]


def _server_ca(site: ClientSite) -> ssl.SSLContext:
    """A client context that trusts the site's own certificate (its SAN has the address)."""
    return ssl.create_default_context(cafile=str(site.data_dir / "tls" / "cert.pem"))


def test_admin_over_tls_sets_secure_cookies_and_checks_the_origin(tls_site: ClientSite) -> None:
    """With [admin] tls: https only, with the site's certificate; the session cookie is
    Secure, HSTS is sent; a form whose Origin differs in scheme or port is refused (403)."""
    site = tls_site
    port = site.ports["admin"]
    base = f"https://{site.address}:{port}"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{site.address}:{port}/console/login", timeout=10)
    with httpx.Client(base_url=base, verify=_server_ca(site), timeout=30) as http:
        login = http.post(
            "/console/login",
            data={"token": site.service.admin_token()},
            headers={"Origin": base},
        )
        assert login.status_code == 303
        cookie = login.headers["set-cookie"]
        assert "sitemail_session=" in cookie
        assert "Secure" in cookie
        assert "HttpOnly" in cookie
        assert login.headers["strict-transport-security"].startswith("max-age=")
        page = http.get("/console/")
        csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        for origin, status in (
            (f"http://{site.address}:{port}", 403),  # same host and port, another scheme
            (f"https://{site.address}:{port + 1}", 403),
            ("https://evil.example", 403),
            (base, 303),
        ):
            answer = http.post("/console/logout", data={"csrf": csrf}, headers={"Origin": origin})
            assert answer.status_code == status, origin


def _peer_subject(address: str, port: int) -> str:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((address, port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


def test_tls_set_is_used_by_the_running_server_without_restart(
    tls_site: ClientSite, tmp_path: Path
) -> None:
    """`sitemail tls set` on a running server: new connections on 993, 465 and the admin
    port present the new certificate within a few seconds; the server was not restarted."""
    site = tls_site
    ports = [site.ports["imaps"], site.ports["submissions"], site.ports["admin"]]
    assert all(_peer_subject(site.address, p) == "CN=servera.sitea.example.com" for p in ports)
    made = make_pair(tmp_path, "reloaded.sitea.example.com", addresses=(site.address,))
    cert, key = made.cert, made.key
    result = subprocess.run(
        [str(SITEMAIL), "tls", "set", "--cert", cert, "--key", key, "-D", site.data_dir],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = {_peer_subject(site.address, p) for p in ports}
        if seen == {"CN=reloaded.sitea.example.com"}:
            break
        time.sleep(0.3)
    assert seen == {"CN=reloaded.sitea.example.com"}
