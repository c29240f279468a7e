"""Schemathesis against /api/openapi.json: generated requests for every operation, sent to a
real uvicorn server on 127.10.75.40, never get a server error (5xx).

Bounded: a few examples per operation, derandomised (the same run every time), no example
database, and the test's own time limit. The doctor is left out: it waits for its round trips
as long as it is told to (up to 600 s), which is its job, not a fault.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from tests.integration.api.conftest import make_site
from tests.support.org import free_port

from sitemail.web import bind_api_socket, create_app, serve_api

HOST = "127.10.75.40"
EXAMPLES = 10  # per operation
# The doctor waits up to `timeout` seconds for round trips by design (tested in test_api_routes)
SKIPPED = {("GET", "/api/doctor")}


class ServerThread:
    """`serve_api` in its own thread and loop, as `sitemail serve` runs it in its loop."""

    def __init__(self, data_dir: Path) -> None:
        self.sock = bind_api_socket(HOST, free_port(HOST))
        self.base = "http://{}:{}".format(*self.sock.getsockname()[:2])
        self.loop = asyncio.new_event_loop()
        app = create_app(data_dir, wake=lambda: None)
        self.task = self.loop.create_task(serve_api(app, self.sock))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass
        finally:
            self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerThread, str]]:
    service = make_site(tmp_path, "SiteA", HOST)
    token = service.admin_token()
    service.close()
    running = ServerThread(tmp_path / "SiteA")
    try:
        yield running, token
    finally:
        running.stop()


@pytest.mark.timeout(600)
def test_api_schemathesis_finds_no_server_error(server: tuple[ServerThread, str]) -> None:
    """Every operation of the OpenAPI document, fed generated input: no 5xx answer."""
    running, token = server
    auth = {"Authorization": f"Bearer {token}"}
    document = httpx.get(f"{running.base}/api/openapi.json", headers=auth, timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=running.base, headers=auth, timeout=60)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} {case.query} {case.body!r}: "
                    f"{response.status_code} {response.text[:300]}"
                )
            assert "Traceback" not in response.text

        check()
    assert operations > 30
    assert not failures, "\n".join(failures)
