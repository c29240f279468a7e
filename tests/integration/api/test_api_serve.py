"""The admin API as `sitemail serve` serves it: a real socket on 127.10.75.x, the token from
`sitemail admin token`, the address from `sitemail admin url`; and Request Now over HTTP
between two running sites, where the API wakes the server's queue through its own loop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tests.integration.api.conftest import make_site
from tests.support.org import free_port, idle, organisation, until

from sitemail.directory import ObjectKind

SITEMAIL = Path(sys.executable).parent / "sitemail"
HOST = "127.10.75.20"


def sitemail(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SITEMAIL), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def configure(data_dir: Path, smtp_port: int, admin_port: int) -> None:
    config = data_dir / "sitemail.toml"
    text = config.read_text()
    text = text.replace("[smtp]\n", f"[smtp]\nport = {smtp_port}\n", 1)
    text = text.replace("[admin]\n", f"[admin]\nport = {admin_port}\n", 1)
    config.write_text(text)


def wait_for_api(url: str, process: subprocess.Popen[str]) -> None:
    """Until the server answers HTTP at all (it is starting); fail if it exits."""
    for _ in range(300):
        if process.poll() is not None:
            raise AssertionError(f"sitemail serve exited {process.returncode}")
        try:
            # Longer than [auth] failure_delay (2 s): a token-less probe answered late is a
            # wrong token counted, and a client that gives up and asks again counts another.
            httpx.get(url, timeout=10)
        except httpx.ConnectError:
            time.sleep(0.1)
            continue
        return
    raise AssertionError("the admin API never answered")


def test_api_served_by_sitemail_serve(tmp_path: Path) -> None:
    """`sitemail serve` serves the API at `sitemail admin url`; the token of `sitemail admin
    token` opens it; a mailbox added over HTTP is the CLI's mailbox; SIGTERM stops it cleanly."""
    service = make_site(tmp_path, "SiteA", HOST)
    service.close()
    data_dir = tmp_path / "SiteA"
    configure(data_dir, free_port(HOST), free_port(HOST))
    base = sitemail("admin", "url", "-D", data_dir).stdout.split()[0]
    token = sitemail("admin", "token", "-D", data_dir).stdout.strip()
    assert base.startswith(f"http://{HOST}:")
    env = {**os.environ, "SITEMAIL_EVENT_LOOP": "asyncio"}
    process = subprocess.Popen(
        [str(SITEMAIL), "serve", "-D", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_for_api(f"{base}sites", process)
        refused = httpx.get(f"{base}sites", timeout=10)
        assert (refused.status_code, refused.json()["code"]) == (401, "unauthorized")
        auth = {"Authorization": f"Bearer {token}"}
        sites = httpx.get(f"{base}sites", headers=auth, timeout=10)
        assert sites.status_code == 200
        assert sites.json()["site"] == "SiteA"
        added = httpx.post(
            f"{base}recipients",
            headers=auth,
            json={"kind": "mailbox", "alias": "jsmith", "display_name": "John Smith"},
            timeout=10,
        )
        assert added.status_code == 201, added.text
        shown = sitemail("mailbox", "show", "jsmith", "-D", data_dir)
        assert "jsmith@sitea.example.com" in shown.stdout
        assert httpx.get(f"{base}openapi.json", headers=auth, timeout=10).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert f"admin API on {base}" in stderr


def test_api_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    """An admin port already taken stops `sitemail serve` at start with one line naming the
    setting, exit 78 (EX_CONFIG), no traceback."""
    service = make_site(tmp_path, "SiteA", HOST)
    service.close()
    data_dir = tmp_path / "SiteA"
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen(1)
        configure(data_dir, free_port(HOST), taken.getsockname()[1])
        result = subprocess.run(
            [str(SITEMAIL), "serve", "-D", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 78, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "admin API" in errors[0]
    assert "[admin]" in errors[0]


def test_api_request_now_over_http_replicates_between_running_sites(tmp_path: Path) -> None:
    """Two running sites; A's Request Now through A's API (a real socket): the request is sent
    at once (the API wakes A's queue) and B's mailboxes arrive at A, as read-only replicas."""

    async def scenario() -> None:
        addresses = {"SiteA": "127.10.75.31", "SiteB": "127.10.75.32"}
        async with organisation(tmp_path, addresses) as org:
            a, b = org.create("SiteA"), org.create("SiteB")
            b.service.add_recipient(ObjectKind.MAILBOX, "bob", display_name="Bob")
            org.connect(a, b)
            org.connect(b, a)
            await org.start(a)
            await org.start(b)
            assert a.server is not None
            assert a.server.api_address is not None
            host, port = a.server.api_address
            auth = {"Authorization": f"Bearer {a.service.admin_token()}"}
            async with httpx.AsyncClient(base_url=f"http://{host}:{port}", headers=auth) as http:
                response = await http.post("/api/replication/SiteB/request-now", json={})
                assert response.status_code == 200, response.text
                assert response.json()["sent"] is True
                await until(idle(a, "SiteB"), what="A idle")
                assert "bob" in a.aliases("SiteB")
                listed = await http.get("/api/recipients", params={"site": "SiteB"})
                [bob] = listed.json()
                assert (bob["alias"], bob["read_only"]) == ("bob", True)
                refused = await http.patch("/api/recipients/bob", json={"display_name": "B"})
                assert (refused.status_code, refused.json()["code"]) == (403, "permission_denied")

    asyncio.run(asyncio.wait_for(scenario(), 90))
