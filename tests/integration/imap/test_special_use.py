"""SPECIAL-USE and CREATE-SPECIAL-USE (RFC 6154) over real sockets against a running site.

The standard folders carry \\Sent \\Drafts \\Trash \\Junk in LIST; LIST (SPECIAL-USE) lists
only such folders; CREATE name (USE (\\Archive)) gives a new folder its attribute, and an
attribute the server cannot give is NO [USEATTR]. A real site on 127.31.0.2; a raw client.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.clientsite import client_site
from tests.support.rawimap import Raw, raw_tls

ADDRESS = "127.31.0.2"
STANDARD = {b"Sent": b"\\Sent", b"Drafts": b"\\Drafts", b"Trash": b"\\Trash", b"Junk": b"\\Junk"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Raw]:
    with client_site(tmp_path, ADDRESS) as running:
        running.add_user("jsmith")
        connection = raw_tls(running)
        yield connection
        connection.close()


def listed(reply: list[bytes]) -> dict[bytes, set[bytes]]:
    """Folder name -> its attributes, from the LIST responses of `reply`."""
    found = {}
    for line in reply:
        match = re.match(rb'\* LIST \(([^)]*)\) "/" "?([^"]*)"?$', line)
        if match:
            found[match.group(2)] = set(match.group(1).split())
    return found


def ok(client: Raw, tag: bytes, text: bytes) -> list[bytes]:
    reply = client.command(tag, text)
    assert reply[-1].startswith(tag + b" OK"), reply
    return reply


def test_imap_special_use_is_advertised(client: Raw) -> None:
    """CAPABILITY lists SPECIAL-USE and CREATE-SPECIAL-USE."""
    words = ok(client, b"c1", b"CAPABILITY")[0].split()
    assert b"SPECIAL-USE" in words
    assert b"CREATE-SPECIAL-USE" in words


def test_imap_special_use_standard_folders_in_list(client: Raw) -> None:
    """LIST shows each standard folder's attribute, INBOX none."""
    folders = listed(ok(client, b"l1", b'LIST "" "*"'))
    for name, use in STANDARD.items():
        assert use in folders[name], folders
    assert not folders[b"INBOX"] & set(STANDARD.values())
    returned = listed(ok(client, b"l2", b'LIST "" "*" RETURN (SPECIAL-USE)'))
    assert returned == folders


def test_imap_special_use_selection_lists_only_special_folders(client: Raw) -> None:
    """LIST (SPECIAL-USE) lists the special-use folders and nothing else."""
    ok(client, b"s1", b"CREATE Plain")
    only = listed(ok(client, b"s2", b'LIST (SPECIAL-USE) "" "*"'))
    assert set(only) == set(STANDARD), only
    everything = listed(ok(client, b"s3", b'LIST () "" "*"'))
    assert b"Plain" in everything
    assert b"INBOX" in everything


def test_imap_create_special_use_gives_the_attribute(client: Raw) -> None:
    """CREATE name (USE (\\Archive)) makes a folder LIST shows with \\Archive."""
    ok(client, b"a1", b"CREATE Archive (USE (\\Archive))")
    ok(client, b"a2", b'CREATE "Old Sent" (use (\\sent))')
    folders = listed(ok(client, b"a3", b'LIST (SPECIAL-USE) "" "*"'))
    assert b"\\Archive" in folders[b"Archive"]
    assert b"\\Sent" in folders[b"Old Sent"]
    assert b"\\Sent" in folders[b"Sent"]


@pytest.mark.parametrize("attributes", [b"\\Flagged", b"\\All", b"\\Sent \\Trash", b"\\Important"])
def test_imap_create_special_use_refuses_what_it_cannot_give(
    client: Raw, attributes: bytes
) -> None:
    """A virtual, unknown or second attribute is NO [USEATTR] and no folder is made."""
    reply = client.command(b"n1", b"CREATE Virtual (USE (%s))" % attributes)
    assert reply[-1].startswith(b"n1 NO [USEATTR]"), reply
    assert b"Virtual" not in listed(ok(client, b"n2", b'LIST "" "*"'))


@pytest.mark.parametrize(
    "command",
    [
        b'LIST (SUBSCRIBED) "" "*"',
        b'LIST "" "*" RETURN (CHILDREN)',
        b"CREATE Bad (USE (Archive))",
    ],
)
def test_imap_special_use_unsupported_options_are_bad(client: Raw, command: bytes) -> None:
    """LIST-EXTENDED options other than SPECIAL-USE, and a malformed USE, get BAD."""
    assert client.command(b"b1", command)[-1].startswith(b"b1 BAD"), command
    ok(client, b"b2", b"NOOP")
