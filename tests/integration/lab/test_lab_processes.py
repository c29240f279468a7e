"""The lab's own processes, in-process (no procedure walked): a child killed under a running
`lab up` is reaped, not left `<defunct>`, and `lab status` gives each running process's id."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.support.org import free_port

from sitemail.lab.lab import Lab

NET = "127.37.6"  # this test's /24 of loopback


def state_of(pid: int) -> str:
    """The process state letter from /proc (Z: a zombie), or "" once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[0]


def test_lab_reaps_a_killed_child_and_status_shows_pids(tmp_path: Path) -> None:
    """The DNS server the lab started is killed: it is a zombie of the lab's process until
    the lab's next look at its processes (as the foreground `lab up` does every 2 s), which
    collects it; `status` shows its pid while it runs and none once it is gone."""
    lab = Lab(tmp_path / "lab", net=NET, dns_port=free_port(f"{NET}.53"), say=lambda _t: None)
    lab.root.mkdir(parents=True)
    lab.state.save(lab.root)
    lab.start_dns()
    pid = lab.state.pids["dns"]
    try:
        assert lab.status()["dns"] == {
            "address": lab.nameserver(),
            "running": True,
            "pid": pid,
        }
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while state_of(pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state_of(pid) == "Z"  # killed, not yet collected by its parent (this process)
        status = lab.status()
        assert status["dns"]["running"] is False
        assert status["dns"]["pid"] is None
        # A killed process shows "Z" as soon as its first thread is gone, and its exit can be
        # collected only once every thread is: the lab's next looks (every 2 s under a
        # foreground `lab up`) collect it.
        deadline = time.monotonic() + 10
        while state_of(pid) != "" and time.monotonic() < deadline:
            lab.status()
            time.sleep(0.05)
        assert state_of(pid) == ""  # reaped
        again = Lab(lab.root, say=lambda _t: None)  # the next `lab up` in that folder
        again.start_dns()
        assert (again.started, again.reused) == (["dns"], [])
        third = Lab(lab.root, say=lambda _t: None)
        third.start_dns()
        assert (third.started, third.reused) == ([], ["dns"])
    finally:
        Lab(lab.root, say=lambda _t: None).stop()
