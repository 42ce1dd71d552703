"""Identifiers: UUIDv7 (RFC 9562), time-ordered so that ids sort by creation and index well."""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> uuid.UUID:
    """A new UUIDv7. Ids made in the same millisecond by this process still sort in creation order:
    the 12-bit ``rand_a`` field carries a counter that restarts at a random value each millisecond."""
    global _last_ms, _counter
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms = now_ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x7FF  # leave room to count up
        else:
            _counter += 1
            if _counter > 0xFFF:  # counter spent: borrow the next millisecond rather than repeat
                _last_ms += 1
                _counter = 0
        ms, counter = _last_ms, _counter
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


def new_id() -> str:
    """A new UUIDv7 as its canonical string."""
    return str(uuid7())


def new_ids(count: int) -> list[str]:
    """``count`` new UUIDv7s as canonical strings, in creation order — what ``count`` calls of :func:`new_id`
    give, made at once (a bulk insert of 100,000 rows spent a second and a half in :func:`new_id`).

    The ids take consecutive ``(millisecond, counter)`` slots exactly as successive :func:`uuid7` calls
    would, borrowing the next milliseconds when a millisecond's counter is spent, so they sort after every id
    this process made before and before every id it makes after.
    """
    global _last_ms, _counter
    if count <= 0:
        return []
    import numpy as np

    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            first = now_ms << 12 | (int.from_bytes(os.urandom(2), "big") & 0x7FF)
        else:
            first = (_last_ms << 12 | _counter) + 1
        last = first + count - 1
        _last_ms, _counter = last >> 12, last & 0xFFF
    # (millisecond << 12 | counter) counts up by one per id: a spent counter carries into the millisecond.
    slots = np.arange(first, last + 1, dtype=np.uint64)
    high = ((slots >> np.uint64(12)) & np.uint64((1 << 48) - 1)) << np.uint64(16)
    high |= np.uint64(0x7 << 12) | (slots & np.uint64(0xFFF))
    low = np.frombuffer(os.urandom(8 * count), dtype=np.uint64) & np.uint64((1 << 62) - 1)
    low |= np.uint64(0b10 << 62)
    # Formatted in C: 16 big-endian bytes per id, hex digits as a (count, 32) array, dashes put between.
    raw = np.empty((count, 2), dtype=">u8")
    raw[:, 0], raw[:, 1] = high, low
    digits = np.frombuffer(raw.tobytes().hex().encode("ascii"), dtype=np.uint8).reshape(count, 32)
    text = np.full((count, 36), ord("-"), dtype=np.uint8)
    for start, end, at in ((0, 8, 0), (8, 12, 9), (12, 16, 14), (16, 20, 19), (20, 32, 24)):
        text[:, at : at + end - start] = digits[:, start:end]
    ids: list[str] = text.view("S36").ravel().astype(str).tolist()
    return ids
