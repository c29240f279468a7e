"""FreeSpace: the room above the reserve, asked of the file system at most once a second."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from sitemail.store.space import FreeSpace

MB = 1024 * 1024


class Disk:
    """statvfs of a file system whose free space the test sets; counts the calls."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.calls = 0
        self.broken = False

    def __call__(self, path: Path) -> os.statvfs_result:
        del path
        self.calls += 1
        if self.broken:
            raise OSError(5, "Input/output error")
        return os.statvfs_result((4096, 4096, 1 << 20, 0, self.free // 4096, 0, 0, 0, 0, 255))


class Ticker:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_free_space_refuses_below_the_reserve_and_sizes_beyond_it() -> None:
    """With 10 MB free and 4 MB reserved: room for 6 MB, not for 6 MB and a byte."""
    disk = Disk(10 * MB)
    space = FreeSpace(Path("/data"), 4 * MB, interval=0, statvfs=disk)
    assert space.has_room()
    assert space.has_room(6 * MB)
    assert not space.has_room(6 * MB + 1)
    disk.free = 4 * MB - 4096
    assert not space.has_room()
    assert not space.has_room(0)


def test_free_space_asks_the_file_system_once_per_interval_while_there_is_plenty() -> None:
    """A thousand MAIL commands in a second cost one statvfs; within twice the reserve,
    every MAIL asks (a busy server writes into a stale answer's reserve)."""
    disk, ticker = Disk(10 * MB), Ticker()
    space = FreeSpace(Path("/data"), MB, interval=1.0, now=ticker, statvfs=disk)
    for _ in range(1000):
        space.has_room(100)
        ticker.t += 0.0005
    assert disk.calls == 1
    disk.free = MB + 4096
    assert space.has_room()  # still the cached answer
    ticker.t += 1.0
    assert space.has_room()
    assert disk.calls == 2
    disk.free = MB - 4096
    assert not space.has_room()  # read again at once
    assert disk.calls == 3


def test_free_space_logs_each_crossing_of_the_reserve_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Going below the reserve and back are logged once each, however often MAIL asks."""
    disk = Disk(MB)
    space = FreeSpace(Path("/data"), 2 * MB, interval=0, statvfs=disk)
    with caplog.at_level(logging.WARNING, logger="sitemail.store"):
        for _ in range(50):
            space.has_room()
        disk.free = 3 * MB
        for _ in range(50):
            space.has_room()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "below the reserve of 2097152 ([queue] min_free)" in messages[0]
    assert "back above the reserve" in messages[1]


def test_free_space_unknown_counts_as_room() -> None:
    """A file system that cannot be asked does not stop mail (the writes still fail safely)."""
    disk = Disk(0)
    disk.broken = True
    space = FreeSpace(Path("/data"), MB, interval=0, statvfs=disk)
    assert space.free() is None
    assert space.has_room(10 * MB)
