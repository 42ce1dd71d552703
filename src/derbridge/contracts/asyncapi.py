"""The bridge's messages as an AsyncAPI 3.0.0 document (``derbridge contracts asyncapi``).

Built from the contracts themselves, never written by hand: one channel per flow (the bridge uses one queue
per flow, named after it), one message per contract type whose payload is the JSON Schema of the whole
envelope with ``type`` and ``flow`` fixed and ``payload`` the type's payload model, and one ``send``
operation per message from its source system's point of view (with the answer as ``reply`` where a message
has one). Payload models are rendered by pydantic into ``components.schemas``.

The output is deterministic: the same contracts give the same document, byte for byte (:func:`render`).
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from derbridge.contracts import (
    device_score_transfer,
    device_status_check,
    enrollment_request,
    enrollment_sync,
    event_cancellation,
    event_outcome,
    event_reservation,
    program_sync,
)
from derbridge.contracts.envelope import Envelope, Flow, SystemName
from derbridge.contracts.registry import CONTRACTS, MessageContract
from derbridge.settings import BridgeSettings

ASYNCAPI_VERSION = "3.0.0"
TITLE = "derbridge bridge messages"
CONTENT_TYPE = "application/json"
SCHEMA_PREFIX = "#/components/schemas/"
DEFAULT_QUEUE_PREFIX: str = BridgeSettings.model_fields["queue_prefix"].default
"""The bridge names a flow's queue ``<queue_prefix>.<flow>``; the document shows the default prefix."""
CORRELATION_ID = "correlation_id"
"""Name of the one Correlation ID object (``components.correlationIds``) every message refers to."""

REPLIES: dict[str, str] = {
    enrollment_request.TYPE: enrollment_request.RESPONSE_TYPE,
    device_status_check.TYPE: device_status_check.RESPONSE_TYPE,
    enrollment_sync.TYPE: enrollment_sync.ACK_TYPE,
    device_score_transfer.TYPE: device_score_transfer.ACK_TYPE,
    event_reservation.TYPE: event_reservation.ACK_TYPE,
    event_cancellation.TYPE: event_cancellation.ACK_TYPE,
    event_outcome.TYPE: event_outcome.ACK_TYPE,
    program_sync.TYPE: program_sync.ACK_TYPE,
}
"""The message each request is answered with, on the same flow and tied by ``correlation_id``: the per-request
enrollment answers (F1), the status-check answer (F2), and the target's acknowledgement of every
state-carrying message (F3-F8). Replies are ordinary messages from the target's outbox (architecture.md)."""

_SYSTEM_NAMES = {SystemName.ASSETHUB: "Asset Hub", SystemName.DERMS: "the DERMS", SystemName.EDGE: "the edge"}

# JSON Schema keywords that only annotate: beside a "$ref" they change nothing, whatever the draft.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly"})

_DESCRIPTION = """\
Every message between Asset Hub and the DERMS travels through the bridge in one **envelope**; the payload \
schema of each message below is that envelope, with `type` and `flow` fixed and `payload` the message's own body.

| field | meaning |
| --- | --- |
| `message_id` | globally unique and time-ordered (UUIDv7); the idempotency key end to end |
| `type` | the message type, e.g. `enrollment-request.v1`: it names the payload's contract |
| `flow` | the flow the message travels on: the channel address below |
| `correlation_id` | ties a request and its reply, and all messages of one business transaction |
| `causation_id` | the message that caused this one, if any |
| `source`, `target` | `assethub`, `derms` or `edge`, with an instance id (a utility may run several DERMS) |
| `business_key` | what an operator searches by: enrollment id, event id, `head_end_system:nic_id` |
| `sequence` | per business key, monotonically increasing (state-carrying messages) |
| `occurred_at` | UTC, ISO 8601 with `Z` |
| `payload` | the flow's body |

**Idempotency.** A message is written to the source system's outbox in the same database transaction as the \
change that caused it, and delivered at least once. The target applies it and records its `message_id` in its \
inbox in one transaction (its inbound API takes `message_id` as the `Idempotency-Key`): a message delivered \
twice has its effect once. A request sent again gets its first answer.

**Ordering.** Messages are not delivered in order. A state-carrying message has a `sequence` per \
`business_key`; the target ignores, and records as stale, a change older than the one it has applied, so \
competing consumers may work in parallel without corrupting state.

**Replies.** Answers (enrollment responses, status-check responses, acknowledgements) are ordinary messages \
from the target's outbox, on the same flow as the request and tied to it by `correlation_id`.

**Transports.** One queue per flow, named after the flow (the channel address) with the configured prefix: \
`<bridge.queue_prefix>.<flow>`, on RabbitMQ (`amqp` server) or in a queue table in the bridge's own database \
(`sql` server). Both carry the same envelopes as JSON. Large lists and files travel by claim check: the \
message carries a manifest and a location in a file store."""


def build_asyncapi(version: str) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of every message in :data:`~derbridge.contracts.registry.CONTRACTS`.

    ``version`` is the document's ``info.version`` (the derbridge version). The result is plain JSON data.
    """
    schemas, payload_refs = _component_schemas(CONTRACTS)
    envelope = schemas[Envelope.__name__]
    messages = {c.type: _message(c, envelope, payload_refs[c.payload]) for c in CONTRACTS}
    used = _reachable_schemas(schemas, messages.values())
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:derbridge:bridge-messages",
        "info": {
            "title": TITLE,
            "version": version,
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": _servers(),
        "channels": {flow.value: _channel(flow, index) for index, flow in enumerate(Flow, start=1)},
        "operations": dict(_operation(c) for c in CONTRACTS),
        "components": {
            "schemas": {name: schemas[name] for name in sorted(used)},
            "messages": {name: messages[name] for name in sorted(messages)},
            "correlationIds": {
                CORRELATION_ID: {
                    "description": "Ties a request and its reply, and all messages of one business transaction.",
                    "location": "$message.payload#/correlation_id",
                }
            },
        },
    }


def render(document: dict[str, Any]) -> str:
    """``document`` as the JSON text to write to a file or a terminal: indented, ASCII only (so no locale can
    garble it), a final newline; the same document gives the same text, so a diff shows only real changes."""
    return json.dumps(document, indent=2, ensure_ascii=True) + "\n"


def operation_id(contract: MessageContract) -> str:
    """The id of the operation by which ``contract``'s source sends it, e.g. ``assethub.send.enrollment-sync.v1``."""
    return f"{contract.source.value}.send.{contract.type}"


def message_title(message_type: str) -> str:
    """A human title for a message type: ``enrollment-request.v1`` gives ``Enrollment request (v1)``."""
    name, _, version = message_type.rpartition(".")
    return f"{name.replace('-', ' ').capitalize()} ({version})"


def _component_schemas(
    contracts: Iterable[MessageContract],
) -> tuple[dict[str, dict[str, Any]], dict[type[BaseModel], str]]:
    """Every model's schema (envelope, payloads and all they nest), by component name, generated in one pass so
    that pydantic gives two models of the same class name distinct names; and each payload model's name."""
    models: list[type[BaseModel]] = [Envelope, *dict.fromkeys(c.payload for c in contracts)]
    refs, top = models_json_schema([(model, "validation") for model in models], ref_template=SCHEMA_PREFIX + "{model}")
    schemas = {name: _draft07_refs(schema) for name, schema in top.get("$defs", {}).items()}
    names = {model: refs[(model, "validation")]["$ref"].removeprefix(SCHEMA_PREFIX) for model in models}
    if names[Envelope] != Envelope.__name__:  # pragma: no cover - only if a payload model were named Envelope
        raise ValueError(f"a payload model's name clashes with the envelope's: {names[Envelope]}")
    return schemas, names


def _draft07_refs(schema: Any) -> Any:
    """``schema`` with every ``$ref`` that has validating siblings wrapped in ``allOf``.

    pydantic writes JSON Schema 2020-12, where a ``$ref``'s siblings apply; AsyncAPI's schema format is a
    superset of draft 07, where they are ignored. Wrapping keeps the meaning under both. Annotation-only
    siblings (a description, a default) are left beside the ``$ref``: ignoring them loses nothing.
    """
    if isinstance(schema, list):
        return [_draft07_refs(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _draft07_refs(value) for key, value in schema.items()}
    if "$ref" in converted and set(converted) - _ANNOTATIONS - {"$ref"}:
        ref = converted.pop("$ref")
        converted["allOf"] = [{"$ref": ref}, *converted.get("allOf", [])]
    return converted


def _message(contract: MessageContract, envelope: dict[str, Any], payload_schema: str) -> dict[str, Any]:
    source, target = _SYSTEM_NAMES[contract.source], _SYSTEM_NAMES[contract.target]
    payload_doc = inspect.getdoc(contract.payload) or ""
    description = f"From {source} to {target} on the `{contract.flow.value}` flow."
    if contract.type in REPLIES.values():
        description += " The answer to a request: its `correlation_id` is the request's."
    description += f"\n\nPayload `{payload_schema}`: {payload_doc}" if payload_doc else ""
    return {
        "name": contract.type,
        "title": message_title(contract.type),
        "summary": contract.summary,
        "description": description,
        "contentType": CONTENT_TYPE,
        "correlationId": {"$ref": f"#/components/correlationIds/{CORRELATION_ID}"},
        "payload": _envelope_of(contract, envelope, payload_schema),
    }


def _envelope_of(contract: MessageContract, envelope: dict[str, Any], payload_schema: str) -> dict[str, Any]:
    """The envelope schema of one message type: ``type`` and ``flow`` fixed, ``payload`` its model, and
    ``message_id`` required (pydantic makes one when it is missing; on the wire it is always there)."""
    schema = copy.deepcopy(envelope)
    schema["title"] = f"{contract.type} envelope"
    schema["description"] = f"The envelope of every `{contract.type}` message, on the `{contract.flow.value}` flow."
    properties: dict[str, Any] = schema["properties"]
    properties["type"] = {
        "const": contract.type,
        "description": "The message type: it names the payload's contract.",
        "title": "Type",
        "type": "string",
    }
    properties["flow"] = {
        "const": contract.flow.value,
        "description": "The flow the message travels on.",
        "title": "Flow",
        "type": "string",
    }
    properties["payload"] = {"$ref": SCHEMA_PREFIX + payload_schema}
    required = {"message_id", *schema.get("required", ())}
    schema["required"] = [name for name in properties if name in required]
    return schema


def _reachable_schemas(schemas: dict[str, Any], roots: Iterable[Any]) -> set[str]:
    """The component schemas that ``roots`` refer to, directly or through each other."""
    found: set[str] = set()
    pending = [ref for root in roots for ref in _refs(root)]
    while pending:
        ref = pending.pop()
        if not ref.startswith(SCHEMA_PREFIX):
            continue
        name = ref.removeprefix(SCHEMA_PREFIX)
        if name not in found:
            found.add(name)
            pending.extend(_refs(schemas[name]))
    return found


def _refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                yield item
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def _servers() -> dict[str, Any]:
    return {
        "amqp": {
            "host": "{host}",
            "pathname": "/",
            "protocol": "amqp",
            "protocolVersion": "0-9-1",
            "title": "RabbitMQ",
            "description": (
                "The `amqp` transport (setting `bridge.transport`; broker at `bridge.amqp_url`): quorum queues, "
                "publisher confirms, manual acknowledgements and a dead-letter exchange."
            ),
            "variables": {"host": {"default": "127.0.0.1:5672", "description": "The broker's host and port."}},
        },
        "sql": {
            "host": "{database}",
            "protocol": "sql",
            "title": "Queue table",
            "description": (
                "The `sql` transport (the default value of `bridge.transport`): a queue table in the bridge's own "
                "database (`bridge.database_url`), SQLite by default or PostgreSQL. Not a broker: receivers lease "
                "rows (on PostgreSQL with `FOR UPDATE SKIP LOCKED`) and delete them when acknowledged. `sql` is "
                "this project's own protocol name (AsyncAPI does not limit protocols to its known list)."
            ),
            "variables": {
                "database": {
                    "default": "var/bridge.db",
                    "description": "The bridge's database: its SQLite file (in the data dir) or its PostgreSQL host.",
                }
            },
        },
    }


def _channel(flow: Flow, index: int) -> dict[str, Any]:
    contracts = [c for c in CONTRACTS if c.flow is flow]
    module = inspect.getmodule(contracts[0].payload) if contracts else None
    summary = (inspect.getdoc(module) or "").partition("\n")[0] if module is not None else ""
    queue = f"{DEFAULT_QUEUE_PREFIX}.{flow.value}"
    channel: dict[str, Any] = {
        "address": flow.value,
        "title": f"F{index} · {flow.value}",
        "summary": summary,
        "description": (
            f"Every message of the `{flow.value}` flow, requests and their answers alike, in one queue named "
            f"`<bridge.queue_prefix>.{flow.value}` (`{queue}` by default) on either transport."
        ),
        "messages": {c.type: {"$ref": f"#/components/messages/{c.type}"} for c in contracts},
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {"name": queue, "durable": True, "exclusive": False, "autoDelete": False},
                "bindingVersion": "0.3.0",
            }
        },
    }
    if not summary:
        del channel["summary"]
    return channel


def _operation(contract: MessageContract) -> tuple[str, dict[str, Any]]:
    flow = contract.flow.value
    channel = {"$ref": f"#/channels/{flow}"}
    source, target = _SYSTEM_NAMES[contract.source], _SYSTEM_NAMES[contract.target]
    operation: dict[str, Any] = {
        "action": "send",
        "channel": channel,
        "messages": [{"$ref": f"#/channels/{flow}/messages/{contract.type}"}],
        "title": f"{source[0].upper()}{source[1:]} sends {contract.type}",
        "summary": contract.summary,
        "description": (
            f"{source[0].upper()}{source[1:]} writes each `{contract.type}` message to its outbox, in the "
            f"transaction of the change that caused it; the bridge delivers it to {target}."
        ),
        "bindings": {"amqp": {"ack": True, "deliveryMode": 2, "bindingVersion": "0.3.0"}},
    }
    reply = REPLIES.get(contract.type)
    if reply is not None:
        operation["reply"] = {"channel": channel, "messages": [{"$ref": f"#/channels/{flow}/messages/{reply}"}]}
    return operation_id(contract), operation
