"""`sitemail lab` end to end (issue 6): the article's three sites as real processes on loopback,
set up by the CLI exactly as the lab prints it, checked by mail from outside, including from a
real MTA that is not ours (Debian's Postfix relaying to the lab's MX).

The lab runs on 127.10.91.0/24 (`--net`, hidden) with free ports, so it never collides with a
lab a person runs on the article's addresses. One lab serves the whole module: bringing it up
walks the whole procedure and takes a minute or two.
"""

from __future__ import annotations

import imaplib
import json
import os
import signal
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench._postfix import PrivatePostfix
from tests.support.lab import RunningLab, free_port_everywhere, running_lab

NET = "127.10.91"
SITE_ADDRESSES = {"SiteA": f"{NET}.10", "SiteB": f"{NET}.15", "SiteC": f"{NET}.20"}
POSTFIX_IP = f"{NET}.30"

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    with running_lab(tmp_path_factory.mktemp("lab") / "lab", NET) as running:
        yield running


def test_lab_up_walks_the_article_in_its_order_and_mail_reaches_each_home_site(
    lab: RunningLab,
) -> None:
    out = lab.up_output
    headings = [
        "Prerequisites: DNS records",
        "Install the Internet Mail Service at SiteA",
        "Install the Internet Mail Service at SiteC",
        "How to Set Up the Internet Mail Service and Connectors to the Remote Sites",
        "Making Domain-Specific Routing Entries",
        "Setting up Directory Replication by means of the Internet Mail Service",
        "Speeding up Initial Directory Replication between Sites",
        "Setting up a Single E-mail Domain",
        "Mail from the Internet to user@example.com",
    ]
    positions = [out.find(h) for h in headings]
    assert -1 not in positions, [h for h, p in zip(headings, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    for line in (
        "user1@example.com            -> in SiteA's mailbox store",
        "user2@example.com            -> in SiteB's mailbox store",
        "user3@example.com            -> in SiteC's mailbox store",
        "mjones@siteb.example.com     -> in SiteB's mailbox store",
    ):
        assert line in out
    assert "$ sitemail connected-site add SiteB --routing-address @SiteB.example.com" in out
    assert "$ sitemail addressing set smtp @example.com --update-recipients" in out


def test_a_mail_client_reads_the_message_from_outside_in_its_home_sites_inbox(
    lab: RunningLab,
) -> None:
    """IMAP at SiteB (STARTTLS on the port after SMTP's), with the lab's password for user2."""
    passwords = (lab.root / "passwords.txt").read_text().splitlines()
    secret = next(line.split()[-1] for line in passwords if line.startswith("user2@"))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the lab's self-signed certificate
    with imaplib.IMAP4(SITE_ADDRESSES["SiteB"], lab.smtp_port + 1, timeout=30) as client:
        client.starttls(context)
        client.login("user2@example.com", secret)
        client.select("INBOX", readonly=True)
        _, found = client.search(None, "SUBJECT", '"Hello from the Internet"')
        assert found[0].split(), "the lab's message from outside is not in user2's INBOX"


def test_lab_status_json_shows_every_process_running_and_the_queues_empty(
    lab: RunningLab,
) -> None:
    status = json.loads(lab.sitemail("lab", "status", "--dir", str(lab.root), "--json").stdout)
    assert status["dns"]["running"]
    assert [s["site"] for s in status["sites"]] == ["SiteA", "SiteB", "SiteC"]
    pids = json.loads((lab.root / "lab.json").read_text())["pids"]
    assert status["dns"]["pid"] == pids["dns"]
    for site in status["sites"]:
        assert site["running"], site
        assert site["pid"] == pids[site["site"]]
        assert site["smtp"] == f"{SITE_ADDRESSES[site['site']]}:{lab.smtp_port}"
        assert {p["peer"] for p in site["replication"]} == set(SITE_ADDRESSES) - {site["site"]}
        assert not any(p["waiting"] for p in site["replication"])
    assert any(e["event"] == "delivered" for s in status["sites"] for e in s["recent"])


def test_lab_up_again_reuses_the_running_lab(lab: RunningLab) -> None:
    """`lab up` again says what it reused and sends no test mail unless `--send-test`."""
    other = str(lab.smtp_port + 100)
    proc = lab.sitemail("lab", "up", "--detach", "--dir", str(lab.root), "--smtp-port", other)
    assert "Install the Internet Mail Service" not in proc.stdout  # nothing made again
    assert f"keeps smtp_port {lab.smtp_port} (not {other})" in proc.stdout
    pids = json.loads((lab.root / "lab.json").read_text())["pids"]
    names = ("dns", "internet", "SiteA", "SiteB", "SiteC")
    reused = ", ".join(f"{n} (pid {pids[n]})" for n in names)
    assert f"reused, already running: {reused}" in proc.stdout
    assert "no test mail sent" in proc.stdout
    assert "sent to" not in proc.stdout
    again = lab.sitemail("lab", "up", "--detach", "--dir", str(lab.root), "--send-test")
    assert "user3@example.com            -> in SiteC's mailbox store" in again.stdout


def test_lab_up_on_a_port_in_use_says_what_to_change(lab: RunningLab, tmp_path: Path) -> None:
    proc = lab.sitemail(
        "lab", "up", "--detach", "--dir", str(tmp_path / "other"), "--net", NET,
        "--smtp-port", str(lab.smtp_port), "--dns-port", str(lab.dns_port), check=False,
    )  # fmt: skip
    assert proc.returncode == 78
    assert "--smtp-port" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "other" / "lab.json").exists()  # a refused lab leaves nothing


postfix_installed = pytest.mark.skipif(
    not Path("/usr/sbin/postfix").exists(), reason="Debian's postfix is not installed"
)


@pytest.mark.postfix
@postfix_installed
def test_postfix_relaying_to_the_lab_mx_reaches_each_home_site(lab: RunningLab) -> None:
    """A real MTA that is not ours, with the company MX as its relay host, hands mail for
    users of all three sites to SiteA; each message is delivered at its user's home site."""
    mx = json.loads(lab.sitemail("lab", "status", "--dir", str(lab.root), "--json").stdout)
    assert mx["sites"][0]["smtp"] == f"{SITE_ADDRESSES['SiteA']}:{lab.smtp_port}"
    port = free_port_everywhere([POSTFIX_IP], socket.SOCK_STREAM)
    relayhost = f"[{SITE_ADDRESSES['SiteA']}]:{lab.smtp_port}"
    with PrivatePostfix(
        ip=POSTFIX_IP,
        port=port,
        mode="discard",
        domain="outside.example",
        extra_main_cf={
            "relayhost": relayhost,
            "default_transport": "smtp",
            "relay_transport": "smtp",
            "smtp_tls_security_level": "may",
        },
    ):
        sent = {}
        with smtplib.SMTP(POSTFIX_IP, port, timeout=30) as smtp:
            for user, home in (("user1", "SiteA"), ("user2", "SiteB"), ("user3", "SiteC")):
                message_id = f"<pf.{uuid.uuid4().hex[:12]}@outside.example>"
                smtp.sendmail(
                    "someone@outside.example",
                    [f"{user}@example.com"],
                    f"From: someone@outside.example\r\nTo: {user}@example.com\r\n"
                    f"Message-ID: {message_id}\r\nSubject: via Postfix\r\n\r\nhello\r\n",
                )
                sent[message_id] = home
        for message_id, home in sent.items():
            assert lab.delivered(home, message_id), f"{message_id} not delivered at {home}"
            received = lab.sitemail(
                "track", message_id, "--json", "--data-dir", str(lab.data_dir("SiteA"))
            )
            assert any(e["event"] == "received" for e in json.loads(received.stdout))


# -- sitemail doctor on the running lab, then on the lab broken on purpose ---------------------


def doctor(lab: RunningLab, *args: str) -> tuple[int, list[dict[str, str]]]:
    proc = lab.sitemail("doctor", "--json", "--timeout", "10", *args, check=False)
    assert "Traceback" not in proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def doctor_once_it_fails(lab: RunningLab, *args: str) -> tuple[int, list[dict[str, str]]]:
    """The doctor after an edit of the zone file: the lab's DNS server reloads it within a
    second or two, so ask until an error shows (20 s at most)."""
    deadline = time.monotonic() + 20
    while True:
        code, findings = doctor(lab, *args)
        if code or time.monotonic() > deadline:
            return code, findings
        time.sleep(0.5)


def problems(findings: list[dict[str, str]]) -> list[str]:
    return [f"{f['check']}: {f['message']}" for f in findings if f["level"] == "error"]


def test_doctor_finds_the_lab_healthy_from_the_default_data_dir(lab: RunningLab) -> None:
    """`sitemail lab up --detach && sitemail doctor` (lab up made SiteA the default)."""
    proc = lab.sitemail("doctor", "--timeout", "10", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 error(s)" in proc.stdout
    code, findings = doctor(lab, "--data-dir", str(lab.data_dir("SiteB")))
    assert code == 0, problems(findings)
    checks = {f["check"] for f in findings}
    assert checks >= {
        "dns", "records", "ims", "connectors", "connected-sites", "replication", "duplicates",
        "routing", "round-trip",
    }  # fmt: skip
    trips = [f["message"] for f in findings if f["check"] == "round-trip"]
    assert len(trips) == 3
    assert all(f["level"] == "ok" for f in findings if f["check"] == "round-trip")


def test_doctor_names_a_missing_reverse_connector(lab: RunningLab) -> None:
    site_b = str(lab.data_dir("SiteB"))
    site_a = str(lab.data_dir("SiteA"))
    shown = json.loads(
        lab.sitemail("replication", "connector", "list", "--json", "--data-dir", site_b).stdout
    )
    to_a = next(c for c in shown if c["site"] == "SiteA")
    lab.sitemail("replication", "connector", "remove", "SiteA", "--data-dir", site_b)
    try:
        code, findings = doctor(lab, "--data-dir", site_b)
        assert code == 1
        assert problems(findings) == [
            "connectors: SiteB has no replication connector to SiteA (SiteA has one to SiteB)"
        ]
        code, findings = doctor(lab, "--data-dir", site_b, "--site", "SiteC")
        assert code == 0, problems(findings)  # the problem is not SiteC's
    finally:
        lab.sitemail(
            "replication", "connector", "add", "SiteA", "--bridgehead", to_a["bridgehead"],
            "--routing-address", to_a["routing_address"], "--peer-key", to_a["peer_key"],
            "--schedule", to_a["schedule"], "--data-dir", site_b,
        )  # fmt: skip
    assert doctor(lab, "--data-dir", site_a)[0] == 0


def test_doctor_names_an_mx_pointing_at_the_wrong_site(lab: RunningLab) -> None:
    zone = lab.root / "dns.zone"
    good = zone.read_text()
    wrong = good.replace(
        "siteb.example.com. IN MX 10 serverb.siteb.example.com.",
        "siteb.example.com. IN MX 10 serverc.sitec.example.com.",
    )
    assert wrong != good
    zone.write_text(wrong)
    try:
        code, findings = doctor_once_it_fails(lab, "--site", "SiteB")
        assert code == 1
        assert problems(findings) == [
            f"dns: SiteB's domain siteb.example.com: MX serverc.sitec.example.com "
            f"{SITE_ADDRESSES['SiteC']} leads to {SITE_ADDRESSES['SiteC']}:{lab.smtp_port} "
            "(SiteC), not SiteB",
            "records: MX siteb.example.com.: MX serverc.sitec.example.com., "
            "not serverb.siteb.example.com.",
        ]
    finally:
        zone.write_text(good)


def test_doctor_names_a_broken_published_record_with_its_fix(lab: RunningLab) -> None:
    """The lab DNS serves every record of `sitemail dns records`; an SPF record that leaves
    out SiteC's address is named, with the line to publish."""
    zone = lab.root / "dns.zone"
    good = zone.read_text()
    spf = (
        f"ip4:{SITE_ADDRESSES['SiteA']} ip4:{SITE_ADDRESSES['SiteB']} ip4:{SITE_ADDRESSES['SiteC']}"
    )
    right = f'example.com. 3600 IN TXT "v=spf1 {spf} -all"'
    assert right in good
    wrong = right.replace(f" ip4:{SITE_ADDRESSES['SiteC']}", "")
    zone.write_text(good.replace(f"\n{right}\n", f"\n{wrong}\n"))  # example.com's only
    try:
        code, findings = doctor_once_it_fails(lab, "--site", "SiteC")
        assert code == 1
        broken = [f for f in findings if f["level"] == "error"]
        assert [(f["check"], f["message"], f["fix"]) for f in broken] == [
            (
                "records",
                f'SPF example.com.: "v=spf1 ip4:{SITE_ADDRESSES["SiteA"]} '
                f'ip4:{SITE_ADDRESSES["SiteB"]} -all" does not list {SITE_ADDRESSES["SiteC"]}: '
                "its mail fails SPF",
                right,
            )
        ]
    finally:
        zone.write_text(good)


def test_lab_up_ends_with_mail_from_each_site_delivered_to_the_labs_internet(
    lab: RunningLab,
) -> None:
    """A user of each site submits to someone@internet.test; the lab's Internet (reached by
    the lab DNS's MX) has each message and finds its signature (the site's own selector,
    looked up in the lab's DNS) valid with dkimpy, as an outside receiver would."""
    out = lab.up_output
    assert "Mail from a user of each site to the Internet (someone@internet.test)" in out
    arrivals = [
        json.loads(line)
        for line in (lab.root / "internet" / "received.jsonl").read_text().splitlines()
    ]
    for site in SITE_ADDRESSES:
        selector = site.lower()
        assert (
            f"{site}: delivered to internet.test, dkim=pass (d=example.com s={selector}" in out
        ), out[-2000:]
    assert len(arrivals) >= 3
    assert all(a["rcpt_to"] == ["someone@internet.test"] for a in arrivals)
    assert all(a["dkim"] == "pass" for a in arrivals), arrivals
    status = json.loads(lab.sitemail("lab", "status", "--dir", str(lab.root), "--json").stdout)
    assert status["internet"]["running"]
    assert status["internet"]["smtp"] == f"{NET}.40:{lab.smtp_port}"


def test_the_labs_internet_refuses_to_relay(lab: RunningLab) -> None:
    """It takes internet.test mail only: another domain is refused at RCPT (no open relay)."""
    with smtplib.SMTP(f"{NET}.40", lab.smtp_port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        smtp.mail("a@client.test")
        code, _ = smtp.rcpt("b@elsewhere.test")
    assert code == 550


def test_doctor_names_a_stopped_site(lab: RunningLab) -> None:
    """Last of the module: the stopped site stays stopped until the fixture's `lab down`."""
    pids = json.loads((lab.root / "lab.json").read_text())["pids"]
    os.kill(pids["SiteC"], signal.SIGTERM)
    deadline = time.monotonic() + 20
    while Path(f"/proc/{pids['SiteC']}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    code, findings = doctor(lab, "--timeout", "3")
    assert code == 1
    found = problems(findings)
    target = f"{SITE_ADDRESSES['SiteC']}:{lab.smtp_port}"
    assert (
        f"ims: SiteC's IMS at {target} (the domain route for sitec.example.com) does not "
        "answer: no answer (connection refused)"
    ) in found
    # Known down from its IMS: no ping is sent to it, and none is waited for.
    assert "round-trip: no ping sent to SiteC: its IMS does not answer (see the ims finding)" in (
        found
    )
    assert all("SiteC" in line for line in found), found
