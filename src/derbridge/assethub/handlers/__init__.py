"""Asset Hub's inbox handlers and jobs, one module per flow: each translates a message (or a job's tick)
into calls of the services, in the inbox's transaction (or the job's). :mod:`derbridge.assethub.system`
binds them to the clock, the file store and the settings."""
