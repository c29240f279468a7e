"""CONDSTORE (RFC 7162) and ENABLE (RFC 5161) over real sockets against a running site.

Every change to a folder (append, flag change, expunge; by this session, another session or
another way in such as SMTP delivery) raises its HIGHESTMODSEQ; FETCH MODSEQ/CHANGEDSINCE,
STORE UNCHANGEDSINCE, SEARCH MODSEQ and STATUS HIGHESTMODSEQ read it. A real site on
127.31.0.1; a raw IMAP client.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.clientsite import ClientSite, client_site
from tests.support.rawimap import USER, Raw, raw_tls

from sitemail.mailbox import get_folder, set_flags

ADDRESS = "127.31.0.1"
MESSAGE = b"From: a@outside.test\r\nTo: " + USER.encode() + b"\r\nSubject: m\r\n\r\nbody\r\n"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[ClientSite]:
    with client_site(tmp_path, ADDRESS) as running:
        running.add_user("jsmith")
        yield running


@pytest.fixture
def client(site: ClientSite) -> Iterator[Raw]:
    connection = raw_tls(site)
    for _ in range(3):
        append(connection)
    yield connection
    connection.close()


def append(client: Raw, folder: bytes = b"INBOX") -> None:
    client.send(b"ap APPEND %s {%d+}\r\n" % (folder, len(MESSAGE)) + MESSAGE + b"\r\n")
    assert client.until_tagged(b"ap")[-1].startswith(b"ap OK")


def ok(client: Raw, tag: bytes, text: bytes) -> list[bytes]:
    reply = client.command(tag, text)
    assert reply[-1].startswith(tag + b" OK"), reply
    return reply


def highest(reply: list[bytes]) -> int:
    """The HIGHESTMODSEQ of an untagged OK or a STATUS in `reply`."""
    for line in reply:
        found = re.search(rb"HIGHESTMODSEQ (\d+)", line)
        if found:
            return int(found.group(1))
    raise AssertionError(reply)


def modseqs(reply: list[bytes]) -> dict[int, int]:
    """Sequence number -> MODSEQ of the FETCH responses in `reply`."""
    found = {}
    for line in reply:
        fetch = re.match(rb"\* (\d+) FETCH .*MODSEQ \((\d+)\)", line)
        if fetch:
            found[int(fetch.group(1))] = int(fetch.group(2))
    return found


def status_modseq(client: Raw, tag: bytes, folder: bytes = b"INBOX") -> int:
    return highest(ok(client, tag, b"STATUS %s (HIGHESTMODSEQ)" % folder))


def test_imap_condstore_is_advertised_and_enabled(client: Raw) -> None:
    """CAPABILITY lists CONDSTORE and ENABLE; ENABLE lists what it turned on, nothing else."""
    capability = ok(client, b"c1", b"CAPABILITY")[0]
    assert b" CONDSTORE" in capability
    assert b" ENABLE" in capability
    assert ok(client, b"c2", b"ENABLE QRESYNC X-UNKNOWN")[0] == b"* ENABLED"
    assert ok(client, b"c3", b"ENABLE condstore")[0] == b"* ENABLED CONDSTORE"
    assert client.command(b"c4", b"ENABLE")[-1].startswith(b"c4 BAD")


def test_imap_condstore_every_change_raises_highestmodseq(client: Raw) -> None:
    """APPEND, STORE and EXPUNGE each raise HIGHESTMODSEQ; SELECT and STATUS agree on it."""
    first = highest(ok(client, b"s1", b"SELECT INBOX (CONDSTORE)"))
    assert status_modseq(client, b"s2") == first
    append(client)
    after_append = status_modseq(client, b"s3")
    assert after_append > first
    stored = ok(client, b"s4", b"STORE 1 +FLAGS (\\Deleted)")
    after_store = modseqs(stored)[1]
    assert after_store > after_append
    assert status_modseq(client, b"s5") == after_store
    ok(client, b"s6", b"EXPUNGE")
    after_expunge = status_modseq(client, b"s7")
    assert after_expunge > after_store
    assert highest(ok(client, b"s8", b"EXAMINE INBOX")) == after_expunge


def test_imap_condstore_fetch_changedsince_returns_only_changed(client: Raw) -> None:
    """FETCH (CHANGEDSINCE n) gives the messages changed after n, with their MODSEQ."""
    before = highest(ok(client, b"f1", b"SELECT INBOX (CONDSTORE)"))
    ok(client, b"f2", b"STORE 2 +FLAGS.SILENT (\\Flagged)")
    reply = ok(client, b"f3", b"FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % before)
    changed = modseqs(reply)
    assert list(changed) == [2], reply
    assert changed[2] > before
    assert b"\\Flagged" in reply[0]
    everything = modseqs(ok(client, b"f4", b"FETCH 1:* (MODSEQ)"))
    assert sorted(everything) == [1, 2, 3]
    assert max(everything.values()) == changed[2]
    uid_reply = ok(client, b"f5", b"UID FETCH 1:* (UID) (CHANGEDSINCE %d)" % changed[2])
    assert modseqs(uid_reply) == {}, uid_reply


def test_imap_condstore_store_unchangedsince_reports_modified(client: Raw) -> None:
    """STORE (UNCHANGEDSINCE n) leaves messages changed after n alone, listed in MODIFIED."""
    base = highest(ok(client, b"u1", b"SELECT INBOX (CONDSTORE)"))
    ok(client, b"u2", b"STORE 1 +FLAGS ($Label1)")
    reply = client.command(b"u3", b"STORE 1:3 (UNCHANGEDSINCE %d) +FLAGS (\\Seen)" % base)
    assert reply[-1].startswith(b"u3 OK [MODIFIED 1]"), reply
    assert sorted(modseqs(reply)) == [2, 3]
    flags = ok(client, b"u4", b"FETCH 1:3 (FLAGS)")
    assert [b"\\Seen" in line for line in flags[:3]] == [False, True, True], flags
    uids = ok(client, b"u5", b"UID SEARCH ALL")[0].split()[2:]
    zero = client.command(b"u6", b"UID STORE 1:* (UNCHANGEDSINCE 0) +FLAGS (\\Draft)")
    assert zero[-1].startswith(b"u6 OK [MODIFIED %s:%s]" % (uids[0], uids[-1])), zero
    silent = client.command(
        b"u7", b"STORE 2 (UNCHANGEDSINCE %d) -FLAGS.SILENT (\\Seen)" % (base + 100)
    )
    assert silent[-1].startswith(b"u7 OK"), silent
    assert re.match(rb"\* 2 FETCH \(MODSEQ \(\d+\)\)", silent[0]), silent


def test_imap_condstore_another_session_change_reaches_this_one(site: ClientSite) -> None:
    """A flag change by another session raises the modseq this session sees, with MODSEQ in
    its unsolicited FETCH."""
    one, two = raw_tls(site), raw_tls(site)
    try:
        append(one)
        before = highest(ok(one, b"a1", b"SELECT INBOX (CONDSTORE)"))
        ok(two, b"b1", b"SELECT INBOX")
        ok(two, b"b2", b"STORE 1 +FLAGS.SILENT (\\Answered)")
        reply = ok(one, b"a2", b"NOOP")
        update = [line for line in reply if line.startswith(b"* 1 FETCH")]
        assert len(update) == 1, reply
        assert b"\\Answered" in update[0], reply
        assert modseqs(update)[1] > before
        assert status_modseq(one, b"a3") == modseqs(update)[1]
    finally:
        one.close()
        two.close()


def test_imap_condstore_delivery_raises_highestmodseq(site: ClientSite, client: Raw) -> None:
    """Mail delivered over SMTP raises HIGHESTMODSEQ; the new message has the new value."""
    before = status_modseq(client, b"d1")
    site.deliver(USER, "delivered")
    site.wait_for_inbox("jsmith", 4)
    after = status_modseq(client, b"d2")
    assert after > before
    ok(client, b"d3", b"SELECT INBOX")
    assert modseqs(ok(client, b"d4", b"FETCH 4 (MODSEQ)")) == {4: after}


def test_imap_condstore_search_modseq(client: Raw) -> None:
    """SEARCH MODSEQ n finds messages changed since and ends with their highest MODSEQ."""
    base = highest(ok(client, b"q1", b"SELECT INBOX (CONDSTORE)"))
    stored = modseqs(ok(client, b"q2", b"STORE 3 +FLAGS (\\Flagged)"))[3]
    reply = ok(client, b"q3", b"SEARCH MODSEQ %d" % (base + 1))
    assert reply[0] == b"* SEARCH 3 (MODSEQ %d)" % stored, reply
    entry = ok(client, b"q4", b'SEARCH MODSEQ "/flags/\\\\flagged" all %d' % (base + 1))
    assert entry[0] == reply[0], entry
    assert ok(client, b"q5", b"SEARCH MODSEQ %d" % (stored + 1))[0] == b"* SEARCH"
    older = ok(client, b"q6", b"SEARCH NOT MODSEQ %d" % base)
    assert re.fullmatch(rb"\* SEARCH 1 2 \(MODSEQ (\d+)\)", older[0]), older


def test_imap_condstore_first_enabling_command_reports_highestmodseq(client: Raw) -> None:
    """FETCH MODSEQ as the first CONDSTORE command on a selected mailbox adds the untagged
    OK [HIGHESTMODSEQ]; later unsolicited FETCH responses carry MODSEQ."""
    ok(client, b"e1", b"SELECT INBOX")
    reply = ok(client, b"e2", b"FETCH 1 (MODSEQ)")
    assert any(line.startswith(b"* OK [HIGHESTMODSEQ ") for line in reply), reply
    again = ok(client, b"e3", b"FETCH 1 (MODSEQ)")
    assert not any(b"HIGHESTMODSEQ" in line for line in again), again
    flags = ok(client, b"e4", b"FETCH 1 (FLAGS)")
    assert b"MODSEQ (" in flags[0], flags


def test_imap_condstore_modseqs_survive_a_restart(site: ClientSite, client: Raw) -> None:
    """MODSEQs and HIGHESTMODSEQ are stored: the same after the site restarts."""
    ok(client, b"r1", b"SELECT INBOX (CONDSTORE)")
    ok(client, b"r2", b"STORE 2 +FLAGS (\\Seen)")
    before = modseqs(ok(client, b"r3", b"FETCH 1:* (MODSEQ)"))
    top = status_modseq(client, b"r4")
    client.close()
    site.restart()
    again = raw_tls(site)
    try:
        assert highest(ok(again, b"r5", b"SELECT INBOX (CONDSTORE)")) == top
        assert modseqs(ok(again, b"r6", b"FETCH 1:* (MODSEQ)")) == before
    finally:
        again.close()


@pytest.mark.parametrize(
    "command",
    [
        b"FETCH 1 (FLAGS) (CHANGEDSINCE abc)",
        b"FETCH 1 (FLAGS) (CHANGEDSINCE 9223372036854775808)",
        b"FETCH 1 (FLAGS) (NOSUCHMODIFIER 1)",
        b"STORE 1 (UNCHANGEDSINCE) +FLAGS (\\Seen)",
        b"SEARCH MODSEQ x",
        b'SEARCH MODSEQ "/flags/\\\\seen" nosuchtype 1',
        b"SELECT INBOX (QRESYNC (1 2))",
    ],
)
def test_imap_condstore_malformed_modifiers_are_bad(client: Raw, command: bytes) -> None:
    """Malformed or unknown CONDSTORE modifiers get BAD, and the session goes on."""
    ok(client, b"m1", b"SELECT INBOX")
    assert client.command(b"m2", command)[-1].startswith(b"m2 BAD"), command
    ok(client, b"m3", b"NOOP")


def test_imap_esearch_returns_min_max_count_all_and_modseq(client: Raw) -> None:
    """SEARCH RETURN (...) answers ESEARCH (RFC 4731); with MODSEQ it tells the highest modseq
    of the messages it names (RFC 7162 3.1.5)."""
    assert b" ESEARCH" in ok(client, b"x1", b"CAPABILITY")[0]
    ok(client, b"x2", b"SELECT INBOX (CONDSTORE)")
    first = modseqs(ok(client, b"x3", b"STORE 1 +FLAGS (\\Seen)"))[1]
    third = modseqs(ok(client, b"x4", b"STORE 3 +FLAGS (\\Seen)"))[3]
    reply = ok(client, b"x5", b"SEARCH RETURN (MIN MAX COUNT) SEEN")
    assert reply[0] == b'* ESEARCH (TAG "x5") MIN 1 MAX 3 COUNT 2', reply
    modseq_min = ok(client, b"x6", b"SEARCH RETURN (MIN) MODSEQ 1 SEEN")
    assert modseq_min[0] == b'* ESEARCH (TAG "x6") MIN 1 MODSEQ %d' % first, modseq_min
    every = ok(client, b"x7", b"SEARCH RETURN () MODSEQ 1 SEEN")
    assert every[0] == b'* ESEARCH (TAG "x7") ALL 1,3 MODSEQ %d' % third, every
    none = ok(client, b"x8", b"UID SEARCH RETURN (MIN COUNT) DRAFT")
    assert none[0] == b'* ESEARCH (TAG "x8") UID COUNT 0', none
    assert client.command(b"x9", b"SEARCH RETURN (SAVE) ALL")[-1].startswith(b"x9 BAD")


def test_imap_condstore_idle_sees_flags_changed_by_another_process(
    site: ClientSite, client: Raw
) -> None:
    """Flags written to the database by another process (as a second IMAP worker would) reach
    an idling CONDSTORE client as a FETCH with the new MODSEQ, within the idle poll."""
    before = highest(ok(client, b"i1", b"SELECT INBOX (CONDSTORE)"))
    client.send(b"i2 IDLE\r\n")
    assert client.line().startswith(b"+ ")
    guid = site.service.directory.get("jsmith").guid
    with site.service.store.write() as conn:
        folder = get_folder(conn, guid, "INBOX")
        assert folder is not None
        stored = set_flags(conn, folder.id, [(2, "\\Flagged")])
    assert stored == before + 1
    update = client.line()  # bounded by the socket's 20 s timeout; idle_poll is 0.25 s
    assert update == b"* 2 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (%d))" % stored, update
    client.send(b"DONE\r\n")
    assert client.until_tagged(b"i2")[-1].startswith(b"i2 OK")
