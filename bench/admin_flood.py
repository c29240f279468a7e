"""How long an authenticated admin API call takes while 100 wrong-token console logins arrive
at once from one address (issue 19: it took about 3 s instead of 0.02 s).

Runs `sitemail serve` as its own process on 127.27.0.60 (a fresh data dir, the source tree
this interpreter imports: set PYTHONPATH to another checkout's src to compare), then times
GET /api/sites alone, and again 0.5 s into a flood of 100 parallel wrong-token logins; prints
the times and how the guesses were answered. Bounded: one flood, 60 s at most.

    .venv/bin/python bench/admin_flood.py
"""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ADDRESS = "127.27.0.60"


def _free_port() -> int:
    import socket  # noqa: PLC0415 - only here

    with socket.socket() as s:
        s.bind((ADDRESS, 0))
        return int(s.getsockname()[1])


def _sitemail(*args: str) -> list[str]:
    return [sys.executable, "-c", "from sitemail.main import main; main()", *args]


def _prepare(data_dir: Path) -> int:
    subprocess.run(
        _sitemail(
            *("init", "-D", str(data_dir), "--org", "BenchORG", "--site", "SiteA"),
            *("--server", "ServerA", "--domain", "sitea.example.com", "--listen", ADDRESS),
        ),
        check=True,
        capture_output=True,
    )
    config = data_dir / "sitemail.toml"
    text = config.read_text().replace("[smtp]\n", f"[smtp]\nport = {_free_port()}\n", 1)
    for section in ("imap", "pop3", "submission"):
        text = text.replace(f"[{section}]\n", f"[{section}]\nport = 0\ntls_port = 0\n", 1)
    port = _free_port()
    config.write_text(text.replace("[admin]\n", f"[admin]\nport = {port}\n", 1))
    return port


async def _measure(base: str, token: str) -> tuple[float, float, collections.Counter[int]]:
    auth = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        await http.get("/api/sites", headers=auth)  # warm
        started = time.monotonic()
        await http.get("/api/sites", headers=auth)
        alone = time.monotonic() - started
        guesses = [
            asyncio.ensure_future(http.post("/console/login", data={"token": f"guess{n}"}))
            for n in range(100)
        ]
        await asyncio.sleep(0.5)
        started = time.monotonic()
        answer = await http.get("/api/sites", headers=auth)
        during = time.monotonic() - started
        assert answer.status_code == 200
        statuses = collections.Counter(r.status_code for r in await asyncio.gather(*guesses))
    return alone, during, statuses


def main() -> None:
    with tempfile.TemporaryDirectory() as temp:
        data_dir = Path(temp) / "SiteA"
        port = _prepare(data_dir)
        token = (data_dir / "admin-token").read_text().strip()
        server = subprocess.Popen(
            _sitemail("serve", "--allow-root", "-D", str(data_dir)), stderr=subprocess.DEVNULL
        )
        try:
            base = f"http://{ADDRESS}:{port}"
            for _ in range(300):
                try:
                    httpx.get(base + "/console/login", timeout=2)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            alone, during, statuses = asyncio.run(asyncio.wait_for(_measure(base, token), 60))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    print(f"GET /api/sites alone:                      {alone * 1000:7.1f} ms")
    print(f"GET /api/sites during 100 wrong logins:    {during * 1000:7.1f} ms")
    print(f"wrong logins answered: {dict(sorted(statuses.items()))}")


if __name__ == "__main__":
    main()
