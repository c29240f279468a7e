"""What `sitemail serve` does to the process once its server is up."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sitemail.site import _GC_THRESHOLD, _settle_garbage_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_start_up_objects_are_frozen_and_young_ones_collected_less_often() -> None:
    older, oldest = gc.get_threshold()[1:]
    _settle_garbage_collector()
    assert gc.get_freeze_count() > 0  # what start-up made is never walked again
    assert gc.get_threshold() == (_GC_THRESHOLD, older, oldest)
