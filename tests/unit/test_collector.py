"""The garbage collector's serving pace (infra/collector.py): set while inside, restored by the last one
out even when entries overlap out of order, and restored when the body raises."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from derbridge.infra.collector import SERVING_THRESHOLDS, serving_pace

DEFAULTS = (700, 10, 10)


@pytest.fixture(autouse=True)
def _defaults() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(*DEFAULTS)
    yield
    gc.set_threshold(*before)


def test_the_pace_holds_inside_and_the_previous_one_comes_back() -> None:
    with serving_pace():
        assert gc.get_threshold() == SERVING_THRESHOLDS
    assert gc.get_threshold() == DEFAULTS


def test_overlapping_entries_leaving_out_of_order_restore_once_the_last_leaves() -> None:
    first, second = serving_pace(), serving_pace()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first one out is not the last
    assert gc.get_threshold() == SERVING_THRESHOLDS
    second.__exit__(None, None, None)
    assert gc.get_threshold() == DEFAULTS


def test_an_error_inside_still_restores() -> None:
    with pytest.raises(RuntimeError), serving_pace():
        raise RuntimeError("boom")
    assert gc.get_threshold() == DEFAULTS
