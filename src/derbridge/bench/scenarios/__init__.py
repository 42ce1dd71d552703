"""The scenarios of quality.md, one per module. Each builds its given state (not timed), runs the real flow on
the embedded system (timed), checks the flow did what it must, then measures its baseline in the same process.

* :mod:`~derbridge.bench.scenarios.registry` — every scenario by name (``SCENARIOS``) and the runs that share
  one world (``WORLDS``): the one list ``derbridge bench`` reads; no scenario registers itself.
* :mod:`~derbridge.bench.scenarios.common` — what they share: business time, the embedded system, results.
* :mod:`~derbridge.bench.scenarios.season` — F4 (:mod:`.f4_score_transfer`), F5 (:mod:`.f5_reservation`)
  and F7 (:mod:`.f7_outcomes`) on one seeded world.
* :mod:`~derbridge.bench.scenarios.enrollment_world` — F1's given state and gateway, for :mod:`.f1_single`
  and :mod:`.f1_bulk`.
* :mod:`.f2_status_check`, :mod:`.bridge_throughput`, :mod:`.cis_import`; the CLI's start-up scenarios are
  :mod:`derbridge.bench.startup`.

Sizes are full size; ``--quick`` divides them by ten (:func:`derbridge.bench.core.scaled`).
"""
