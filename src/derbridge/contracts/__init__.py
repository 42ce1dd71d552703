"""The message contracts between Asset Hub and the DERMS (flows.md).

:mod:`~derbridge.contracts.envelope` holds the envelope every message travels in and the flow names; one module
per flow holds its pydantic payload models; :mod:`~derbridge.contracts.registry` says which payload model each
message ``type`` carries, on which flow, from which system to which; and :mod:`~derbridge.contracts.asyncapi`
renders all of it as an AsyncAPI 3.0 document (``derbridge contracts asyncapi``).
"""
