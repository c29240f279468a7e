"""admin/privileges.py: the data dir handed to the server's user, never a file outside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sitemail.admin.privileges import hand_over

NOBODY = 65534  # Debian's nobody and nogroup

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="giving files away needs root")


def test_hand_over_gives_the_tree_and_never_follows_a_link(tmp_path: Path) -> None:
    """Every entry under the data dir changes owner; a link's target outside it does not."""
    data_dir = tmp_path / "data"
    (data_dir / "keys").mkdir(parents=True)
    (data_dir / "keys" / "site.pem").write_text("key")
    outside = tmp_path / "outside"
    outside.write_text("not ours")
    (data_dir / "link").symlink_to(outside)
    (data_dir / "dirlink").symlink_to(tmp_path)

    hand_over(data_dir, NOBODY, NOBODY)

    for path in (data_dir, data_dir / "keys", data_dir / "keys" / "site.pem", data_dir / "link"):
        assert (path.lstat().st_uid, path.lstat().st_gid) == (NOBODY, NOBODY), path
    assert outside.stat().st_uid == 0
    assert tmp_path.stat().st_uid == 0
