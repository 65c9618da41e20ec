"""The upload API's collector settings: start-up frozen, young collections rarer, both undone on exit."""

from __future__ import annotations

import gc

from depot_upload.bootstrap import YOUNG_COLLECTION_THRESHOLD, long_lived_start_up


def test_start_up_is_frozen_and_young_collections_rarer_while_the_app_runs_and_undone_after() -> None:
    """Inside, start-up's objects are frozen and the youngest generation's threshold raised; after, as before."""
    before = gc.get_threshold()
    gc.unfreeze()
    with long_lived_start_up():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *before[1:])
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
