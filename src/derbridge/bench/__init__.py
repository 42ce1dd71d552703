"""The benchmark suite of quality.md: each scenario drives the real flow on the embedded system (or on
PostgreSQL / RabbitMQ) and measures it next to a baseline taken in the same run.

* :mod:`derbridge.bench.core` — results (one JSON object per scenario), backends (throw-away databases and
  virtual hosts), bare-insert baselines, peak memory.
* :mod:`derbridge.bench.world` — the *given* state a scenario starts from, seeded in bulk (not timed).
* :mod:`derbridge.bench.scenarios` — the scenarios, one per module, and their registry (``registry``).
* :mod:`derbridge.bench.run` — ``python -m derbridge.bench.run SCENARIO BACKEND``: one scenario in this
  process; ``derbridge bench`` runs each in a fresh one so that peak memory is the scenario's own.

What is timed is only the flow: generating inputs and seeding the state a flow starts from happen before
the clock starts. See ``docs/performance.md``.
"""
