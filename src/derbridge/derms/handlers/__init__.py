"""The DERMS's inbox handlers and jobs, one module per flow.

A handler takes one message (or a batch handler a run of them) inside the inbox's transaction and translates
it into service calls: that transaction is the unit of work, so everything the handler's services write
commits with the inbox row or not at all. The composition root (:func:`derbridge.derms.system.build`) binds
each handler to what it needs (clock, ports, file store) and names it for its message type:

- :mod:`.enrollment_requests` — F1 Asset Hub's answers to enrollment requests;
- :mod:`.status_checks` — F2 status checks;
- :mod:`.enrollment_sync` — F3 enrollment syncs;
- :mod:`.score_snapshots` — F4 score files to load;
- :mod:`.events` — the ``event-lifecycle`` job (F5, F6, F7) and Asset Hub's acknowledgements of the event
  messages;
- :mod:`.program_sync` — F8 program versions.

Services, domain, adapters and the API import no handler (the ``derms-handlers`` contract).
"""
