"""Use cases that span both systems (and the bridge), called by the CLI, the demo and the bench alike: each
composes the systems' own services and queries, so that no entry point repeats the composition.

* :mod:`.cis_import` — a CIS extract into Asset Hub and the DERMS, then the bridge's parked messages that
  waited for those customers woken (P0).
* :mod:`.devices` — one device as each system holds it (``derbridge devices show``).
* :mod:`.events` — one event as the DERMS holds it and as Asset Hub recorded it (``derbridge events show``).
* :mod:`.bridge` — what the bridge still has to carry over both systems' outboxes (``derbridge wait idle``).

The entry points parse their input, call one function here and present what it returns.
"""
