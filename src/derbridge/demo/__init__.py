"""``derbridge demo``: the whole loop on the embedded default, narrated stage by stage.

A synthetic utility is generated; its CIS extract goes into both systems; simulated aggregators — real
OpenADR 3.1 VENs on the ``openadr3`` client (:mod:`derbridge.sim.ven`), each an edge client made as
``derbridge edge client add`` makes one — take a token, register their VEN, onboard their devices through
the VTN's bulk ``/resources/batch`` (enrollment requests, F1) and heartbeat on the program's status event;
Asset Hub validates the requests, checks each device (F2) and syncs the active enrollments (F3); scores are
computed and transferred (F4); an event is created, reserved (F5), reaches the aggregators as OpenADR
events, which they answer with outcome reports (F7) before it closes; a second event is created and
cancelled (F6) and the aggregators see it withdrawn; scores are computed again from the new history. Every
message goes through the bridge (sql transport, SQLite). Business time is simulated, so a day of events
takes seconds.

The ``openadr3`` client is synchronous HTTP, so the embedded system is also served on a loopback port by
uvicorn in the demo's event loop, and the VENs' calls run in a worker thread (:func:`asyncio.to_thread`).

The demo is three modules: :mod:`~derbridge.demo.script` drives the stages, :mod:`~derbridge.demo.checks`
checks that each worked and that the two systems agree at the end, :mod:`~derbridge.demo.report` prints what a
person reads.
"""

from __future__ import annotations

import asyncio
from typing import Any

from rich.console import Console

from derbridge.demo.report import Narration
from derbridge.demo.script import Demo
from derbridge.settings import Settings


def run_demo(settings: Settings, *, customers: int, seed: int, console: Console) -> dict[str, Any]:
    """Run the demo and return its summary (what ``--summary`` writes)."""
    return asyncio.run(Demo(settings, customers, seed, Narration(console)).run())
