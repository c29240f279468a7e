"""The console's end-to-end set-up: one running lab per module (on 127.10.93.0/24, so it never
meets the lab test's 127.10.91.x or a person's lab on 127.10.10.x), Debian's chromium driven
by Playwright, a logged-in page per test, and screenshots saved as test artefacts.

Screenshots go to `test-artifacts/console/` at the repository root (or under
$SITEMAIL_TEST_ARTIFACTS); the directory is printed at the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from tests.e2e.browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    NET,
    Screenshot,
    log_in,
    open_page,
)
from tests.support.lab import RunningLab, existing_lab, running_lab

SAVED = pytest.StashKey[list[Path]]()
CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Note on the test whether its body failed (the console fixture then keeps the page)."""
    report: pytest.TestReport = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    """A lab of the module's own; or, to try a change quickly, the running lab named by
    $SITEMAIL_E2E_LAB (its folder: it is used as it is and left running)."""
    if existing := os.environ.get("SITEMAIL_E2E_LAB"):
        yield existing_lab(Path(existing), tmp_path_factory.mktemp("config"))
        return
    with running_lab(tmp_path_factory.mktemp("console-lab") / "lab", NET) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, timeout=60_000
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def console(
    lab: RunningLab, browser: Browser, screenshot: Screenshot, request: pytest.FixtureRequest
) -> Iterator[Page]:
    """SiteA's console, logged in with SiteA's admin token; no page errors by the end. The
    page a failed test ends on is saved as `failed-<test>.png`."""
    page, errors = open_page(browser, lab.console_url("SiteA"))
    try:
        log_in(page, lab.token("SiteA"))
        yield page
        if request.node.stash.get(CALL_FAILED, False):
            screenshot(page, f"failed-{request.node.name}")
        assert errors.seen == [], errors.seen
    finally:
        page.context.close()


@pytest.fixture(scope="module")
def artifacts() -> Path:
    """This run's screenshots (those of an earlier run are removed first)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS


@pytest.fixture
def screenshot(artifacts: Path, request: pytest.FixtureRequest) -> Screenshot:
    def take(page: Page, name: str) -> Path:
        path = artifacts / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        request.config.stash.setdefault(SAVED, []).append(path)
        return path

    return take


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    saved = terminalreporter.config.stash.get(SAVED, [])
    if saved:
        terminalreporter.write_line(f"console screenshots ({len(saved)}): {saved[0].parent}/")
