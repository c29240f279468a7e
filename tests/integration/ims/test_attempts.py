"""`queue list` and `queue show` say what an attempt in progress is doing, with the last error.

A real server in the test's event loop relays by a domain route to a next hop that is a plain
asyncio SMTP server: it greylists the first recipient it sees (451), then takes MAIL and RCPT
and never answers DATA. The CLI runs as its own process, as an administrator runs it, and
asks the server over the local control channel (admin/wake.py); the admin API answers from
the server's memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import smtplib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from tests.support.org import free_port
from tests.support.serve import relaying_site, serve_command

from sitemail.config import AdminConfig, load_config
from sitemail.site import SiteServer

HOST = "127.22.0.10"
NEXT_HOP = "127.22.0.11"


class StallingHop:
    """An SMTP server that answers the first RCPT 451 and never answers a DATA after an
    accepted RCPT (PIPELINING offered, as Postfix does)."""

    def __init__(self) -> None:
        self.rcpts = 0
        self.stalled = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        writer.write(b"220 stall.test ESMTP\r\n")
        accepted = False
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-stall.test\r\n250 PIPELINING\r\n")
            elif verb == b"RCPT":
                self.rcpts += 1
                accepted = self.rcpts > 1
                writer.write(b"250 2.1.5 ok\r\n" if accepted else b"451 4.7.1 greylisted\r\n")
            elif verb == b"DATA":
                if accepted:
                    self.stalled.set()
                    await reader.read()  # never answers; waits for the client to give up
                    return
                writer.write(b"554 5.5.1 no valid recipients\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 bye\r\n")
                return
            else:  # MAIL, RSET, NOOP
                writer.write(b"250 2.0.0 ok\r\n")
            await writer.drain()

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


@asynccontextmanager
async def _site(tmp_path: Path, hop_port: int) -> AsyncIterator[tuple[SiteServer, int]]:
    data_dir = tmp_path / "SiteA"
    relaying_site(data_dir, HOST, "stall.test", f"{NEXT_HOP}:{hop_port}")
    config = load_config(data_dir)
    port = free_port(HOST)
    config = dataclasses.replace(
        config,
        smtp=dataclasses.replace(config.smtp, port=port),
        admin=AdminConfig(listen=HOST, port=free_port(HOST)),
        imap=dataclasses.replace(config.imap, port=0, tls_port=0),
        pop3=dataclasses.replace(config.pop3, port=0, tls_port=0),
        submission=dataclasses.replace(config.submission, port=0, tls_port=0),
        replication=dataclasses.replace(config.replication, startup_delay=3600.0),
    )
    server = SiteServer(config)
    ready = asyncio.Event()
    task = asyncio.create_task(server.run(lambda _: ready.set()))
    async with asyncio.timeout(15):
        await ready.wait()
    try:
        yield server, port
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=15)


async def _cli(data_dir: Path, *args: str) -> str:
    """A `sitemail` command in its own process (the server's loop stays free to answer)."""
    process = await asyncio.create_subprocess_exec(
        *serve_command(data_dir)[:3],
        *args,
        "-D",
        str(data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


def _send(port: int) -> None:
    with smtplib.SMTP(HOST, port, local_hostname="client.test", timeout=10) as client:
        client.sendmail("alice@client.test", ["bob@stall.test"], b"Subject: s\r\n\r\nbody\r\n")


def test_queue_views_say_what_a_stalled_attempt_is_doing(tmp_path: Path) -> None:
    """While the next hop sits on DATA: `queue list` (text and JSON), `queue show` and the
    admin API say "waiting for the reply to DATA" since when, beside the previous try's
    error (451 greylisted); once the server is gone, the list shows the database alone."""

    async def scenario() -> None:
        hop = StallingHop()
        listener = await asyncio.start_server(hop.session, NEXT_HOP, 0)
        hop_port = listener.sockets[0].getsockname()[1]
        try:
            async with _site(tmp_path, hop_port) as (server, port):
                data_dir = server.config.data_dir
                await asyncio.to_thread(_send, port)
                async with asyncio.timeout(20):
                    while "tries 1" not in (listed := await _cli(data_dir, "queue", "list")):  # noqa: ASYNC110 - polls another process
                        await asyncio.sleep(0.2)
                assert "now:" not in listed  # deferred, nothing in progress
                await _cli(data_dir, "queue", "retry")
                async with asyncio.timeout(20):
                    await hop.stalled.wait()
                await asyncio.sleep(0.2)  # past the write of the pipelined DATA

                listed = await _cli(data_dir, "queue", "list")
                assert "bob@stall.test  tries 1  (4.7.1 greylisted" in listed, listed
                assert f"now: waiting for the reply to DATA ({NEXT_HOP}[{NEXT_HOP}]:" in listed
                assert " since " in listed
                entry = json.loads(await _cli(data_dir, "queue", "list", "--json"))[0]
                recipient = entry["recipients"][0]
                assert recipient["doing"].startswith("waiting for the reply to DATA")
                assert recipient["doing_since"]
                assert recipient["attempt_started"]
                assert recipient["last_status"] == "4.7.1"
                shown = await _cli(data_dir, "queue", "show", entry["queue_id"])
                assert "now: waiting for the reply to DATA" in shown

                assert server.api_address is not None
                host, api_port = server.api_address
                token = (data_dir / "admin-token").read_text().strip()
                async with httpx.AsyncClient(
                    base_url=f"http://{host}:{api_port}",
                    headers={"Authorization": f"Bearer {token}"},
                ) as http:
                    api = (await http.get("/api/queue", timeout=10)).json()
                assert api[0]["recipients"][0]["doing"].startswith("waiting for the reply to DATA")
            hop.close()
            offline = await _cli(data_dir, "queue", "list")
            assert "tries 1" in offline
            assert "now:" not in offline  # no server: what the database knows
        finally:
            hop.close()
            listener.close()

    asyncio.run(scenario())
