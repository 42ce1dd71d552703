"""The DERMS's rule for program versions (program sync): only a newer version replaces the program."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from derbridge.derms.domain.program import is_stale


def test_a_program_new_to_the_derms_is_never_stale() -> None:
    assert not is_stale(None, 1)


def test_the_same_or_an_older_version_is_stale_a_newer_one_is_not() -> None:
    assert is_stale(3, 3)
    assert is_stale(3, 2)
    assert not is_stale(3, 4)
    assert not is_stale(0, 1)  # a program made before program sync (version 0) takes Asset Hub's first version


@given(st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=30))
def test_whatever_the_arrival_order_the_highest_version_ends_applied(arrivals: list[int]) -> None:
    applied: int | None = None
    for version in arrivals:
        if not is_stale(applied, version):
            applied = version
    assert applied == max(arrivals)
