"""The periodic jobs of the derms system; each flow registers its own (see :mod:`derbridge.infra.jobs`)."""

from __future__ import annotations

from derbridge.infra.jobs import JobRegistry

jobs = JobRegistry()
