"""The VTN's objects: create, read, update, delete with object privacy, and the webhook notifications
each change causes (written in the change's transaction, delivered by :mod:`derbridge.edge.webhooks`).

Privacy (Definition.md, "Object Privacy"): a business-logic client sees everything. A VEN sees only the
vens, resources, reports and subscriptions whose ``clientID`` is its own; programs and events it sees by
targets: an object without targets is for every VEN, a targeted one only when a target matches one granted
to the VEN (its ven's and resources' targets, narrowed to the targets it asked for), and only the matching
targets are shown. Events the DERMS addressed to one aggregator (``client_id`` set) are seen by that
aggregator alone. Another VEN's object is answered 404, as if it did not exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    String,
    Text,
    any_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.edge.auth import Principal
from derbridge.edge.domain import effective_targets, visible_targets
from derbridge.edge.schemas import ObjectType, Operation
from derbridge.edge.tables import edge_clients, edge_notifications, edge_objects
from derbridge.edge.token_vault import TokenVault
from derbridge.errors import Conflict, FieldError, NotFound
from derbridge.infra.ids import new_id

o = edge_objects

OWNED = frozenset({ObjectType.VEN, ObjectType.RESOURCE, ObjectType.REPORT, ObjectType.SUBSCRIPTION})
"""Object types a VEN sees by ``clientID``; programs and events it sees by targets."""


def not_found(object_type: ObjectType, object_id: str) -> NotFound:
    """The refusal (404) for an object that does not exist, or that the caller may not see."""
    return NotFound(
        "not-found", "Not Found", f"No {object_type.value.lower()} {object_id!r} is visible to this client."
    )


@dataclass
class Row:
    """One stored object: its promoted columns and its body."""

    id: str
    object_type: ObjectType
    client_id: str | None
    ven_id: str | None
    program_id: str | None
    event_id: str | None
    name: str | None
    targets: list[str]
    body: dict[str, Any]
    derms_key: str | None
    head_end_system: str | None
    nic_id: str | None
    created_at: datetime
    modified_at: datetime

    @classmethod
    def of(cls, mapping: Mapping[Any, Any]) -> Row:
        """A row read from ``edge_objects``."""
        values = {k: mapping[k] for k in cls.__dataclass_fields__ if k != "object_type"}
        return cls(object_type=ObjectType(mapping["object_type"]), **values)


def represent(
    row: Row, vault: TokenVault, shown_targets: list[str] | None = None, extra_attributes: Sequence[Any] = ()
) -> dict[str, Any]:
    """The object as the API answers it: the VTN's metadata, then the stored representation (a
    subscription's bearer tokens opened with ``vault``: they are sealed at rest)."""
    body = dict(row.body)
    if row.object_type is ObjectType.SUBSCRIPTION:
        body = vault.open_subscription(body)
    targets = row.targets if shown_targets is None else shown_targets
    if targets:
        body["targets"] = targets
    else:
        body.pop("targets", None)
    if extra_attributes:
        body["attributes"] = list(body.get("attributes") or []) + list(extra_attributes)
    return {
        "id": row.id,
        "createdDateTime": _iso(row.created_at),
        "modificationDateTime": _iso(row.modified_at),
        "objectType": row.object_type.value,
        **body,
    }


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


# --- reads -------------------------------------------------------------------------------------------


async def granted_targets(connection: AsyncConnection, client_id: str) -> set[str]:
    """The targets the business logic granted to a VEN client: those of its vens and their resources.

    A resource's own ``resourceName`` is never a grant, even where an older VTN stored it among the targets
    (it granted every resource its name): the VEN chooses that name, so it could name a resource after a
    target meant for another aggregator and see its events (issue 15, finding 2)."""
    rows = await connection.execute(
        select(o.c.object_type, o.c.name, o.c.targets).where(
            o.c.object_type.in_([ObjectType.VEN.value, ObjectType.RESOURCE.value]), o.c.client_id == client_id
        )
    )
    return {
        t for (kind, name, targets) in rows for t in targets or [] if kind != ObjectType.RESOURCE.value or t != name
    }


async def any_target_granted(connection: AsyncConnection, client_id: str, targets: Sequence[str]) -> bool:
    """Whether one of ``targets`` is granted to a VEN client: :func:`granted_targets` asked only whether
    it meets ``targets``, answered in the database with the first match. A report's event is targeted
    at the resources the DERMS reserved (tens of thousands of names); decoding the targets of every
    resource of the client in Python on each report was a quarter of the report's time."""
    if not targets:
        return False
    if connection.dialect.name == "postgresql":
        granted = func.json_array_elements_text(o.c.targets).table_valued("value")
        wanted: ColumnElement[bool] = granted.c.value == any_(bindparam("targets", list(targets), ARRAY(String())))
    else:
        granted = func.json_each(o.c.targets).table_valued("value")
        asked = func.json_each(bindparam("targets", json.dumps(list(targets)), String())).table_valued("value")
        wanted = granted.c.value.in_(select(asked.c.value))
    found = (
        select(literal(1))
        .select_from(o)
        .join(granted, true())
        .where(
            o.c.object_type.in_([ObjectType.VEN.value, ObjectType.RESOURCE.value]),
            o.c.client_id == client_id,
            wanted,
            # A resource's own name is not a grant (see granted_targets).
            or_(o.c.object_type == ObjectType.VEN.value, o.c.name.is_(None), granted.c.value != o.c.name),
        )
    )
    return (await connection.execute(select(exists(found)))).scalar() is True


@dataclass(frozen=True)
class Query:
    """A listing's filters (each optional; all must match) and its page."""

    equals: Mapping[str, str | None]
    targets: Sequence[str] | None
    skip: int
    limit: int
    max_bytes: int | None = None
    """The page stops before the object that would take it past this many bytes of stored representation
    (always at least one object): a VEN's 157 MB page of ten 15 MB resources was one answer."""


def _size_of(connection: AsyncConnection) -> ColumnElement[int]:
    """The stored representation's length, in the database (the body need not be read to be measured)."""
    if connection.dialect.name == "postgresql":
        return func.length(cast(o.c.body, Text))
    return func.length(o.c.body)


def _owned_scope(principal: Principal) -> list[ColumnElement[bool]]:
    return [o.c.client_id == principal.client_id] if principal.is_ven else []


async def list_objects(engine: AsyncEngine, principal: Principal, object_type: ObjectType, query: Query) -> list[Row]:
    """A page of objects of one type visible to ``principal``, in creation order (the UUIDv7 ids), with
    ``skip`` and ``limit``; ``targets`` filters (and for a VEN narrows what is granted to it)."""
    statement = select(o).where(o.c.object_type == object_type.value).order_by(o.c.id)
    for column, value in query.equals.items():
        if value is not None:
            statement = statement.where(o.c[column] == value)
    async with engine.connect() as connection:
        if object_type in OWNED:
            for condition in _owned_scope(principal):
                statement = statement.where(condition)
            if query.targets:
                # Not target-hidden (the objects are the VEN's own), so a plain filter: any target matches.
                rows = [Row.of(r) for r in (await connection.execute(statement)).mappings()]
                wanted = set(query.targets)
                rows = [r for r in rows if wanted & set(r.targets)]
                return _within_bytes(rows[query.skip : query.skip + query.limit], query.max_bytes)
            if query.max_bytes is None:
                statement = statement.offset(query.skip).limit(query.limit)
                return [Row.of(r) for r in (await connection.execute(statement)).mappings()]
            return await _page_by_bytes(connection, statement, query)
        # Programs and events: visibility depends on targets, so they are filtered here before paging.
        shown = await _target_filter(connection, principal, query.targets)
        if principal.is_ven:
            statement = statement.where(or_(o.c.client_id.is_(None), o.c.client_id == principal.client_id))
        found: list[Row] = []
        skipped = 0
        spent = 0
        for mapping in (await connection.execute(statement.add_columns(_size_of(connection).label("size")))).mappings():
            row = Row.of(mapping)
            targets = shown(row)
            if targets is None:
                continue
            if skipped < query.skip:
                skipped += 1
                continue
            spent += int(mapping["size"] or 0)
            if found and query.max_bytes is not None and spent > query.max_bytes:
                break
            row.targets = targets
            found.append(row)
            if len(found) >= query.limit:
                break
        return found


def _within_bytes(rows: list[Row], max_bytes: int | None) -> list[Row]:
    """The first rows whose representations fit ``max_bytes`` (at least one)."""
    if max_bytes is None:
        return rows
    kept: list[Row] = []
    spent = 0
    for row in rows:
        spent += len(json.dumps(row.body))
        if kept and spent > max_bytes:
            break
        kept.append(row)
    return kept


async def _page_by_bytes(connection: AsyncConnection, statement: Any, query: Query) -> list[Row]:
    """A page of ``statement``'s rows cut by count and by bytes, measured and cut in the database: only the
    rows of the page are read (a page of huge objects never reaches Python whole)."""
    sizes = (
        statement.with_only_columns(o.c.id, _size_of(connection).label("size"))
        .offset(query.skip)
        .limit(query.limit)
        .subquery()
    )
    running = select(
        sizes.c.id, sizes.c.size, func.sum(sizes.c.size).over(order_by=sizes.c.id).label("running")
    ).subquery()
    chosen = (
        select(o)
        .join(running, running.c.id == o.c.id)
        # A row is in the page while the page up to it fits the budget; the first one always is.
        .where(or_(running.c.running <= query.max_bytes, running.c.running - running.c.size == 0))
        .order_by(o.c.id)
    )
    return [Row.of(r) for r in (await connection.execute(chosen)).mappings()]


def addressed_targets(targets: Sequence[str], requested: Sequence[str] | None) -> list[str] | None:
    """The targets a VEN sees of an event the VTN addressed to its client (a mirrored event, a
    fresh-reading event): the VTN wrote them, all naming that client's own resources, so none is hidden;
    a ``targets`` filter still narrows them (and leaves out the event when none matches)."""
    return visible_targets(targets, set(requested) if requested else set(targets), bool(requested))


async def _target_filter(connection: AsyncConnection, principal: Principal, requested: Sequence[str] | None) -> Any:
    """A function giving the targets of a program or event the caller may see (None: not visible)."""
    if not principal.is_ven:
        wanted = set(requested or [])

        def for_bl(row: Row) -> list[str] | None:
            if not wanted:
                return row.targets
            return row.targets if wanted & set(row.targets) else None

        return for_bl
    effective = effective_targets(await granted_targets(connection, principal.client_id), requested)
    filtered = bool(requested)

    def for_ven(row: Row) -> list[str] | None:
        if row.client_id == principal.client_id:
            return addressed_targets(row.targets, requested)
        return visible_targets(row.targets, effective, filtered)

    return for_ven


async def get_object(engine: AsyncEngine, principal: Principal, object_type: ObjectType, object_id: str) -> Row:
    """One object visible to ``principal`` (targets hidden for a VEN), or a 404 problem."""
    async with engine.connect() as connection:
        return await get_in(connection, principal, object_type, object_id)


async def get_in(connection: AsyncConnection, principal: Principal, object_type: ObjectType, object_id: str) -> Row:
    mapping = (
        (await connection.execute(select(o).where(o.c.id == object_id, o.c.object_type == object_type.value)))
        .mappings()
        .first()
    )
    if mapping is None:
        raise not_found(object_type, object_id)
    row = Row.of(mapping)
    if not principal.is_ven:
        return row
    if object_type in OWNED:
        if row.client_id != principal.client_id:
            raise not_found(object_type, object_id)
        return row
    if row.client_id is not None and row.client_id != principal.client_id:
        raise not_found(object_type, object_id)
    shown = (await _target_filter(connection, principal, None))(row)
    if shown is None:
        raise not_found(object_type, object_id)
    row.targets = shown
    return row


# --- writes ------------------------------------------------------------------------------------------


@dataclass
class NewObject:
    """What a create or update writes (everything but the metadata the VTN provisions)."""

    object_type: ObjectType
    body: dict[str, Any]
    targets: list[str]
    id: str | None = None
    client_id: str | None = None
    ven_id: str | None = None
    program_id: str | None = None
    event_id: str | None = None
    name: str | None = None
    unique_key: str | None = None
    derms_key: str | None = None
    head_end_system: str | None = None
    nic_id: str | None = None

    def columns(self, vault: TokenVault) -> dict[str, Any]:
        """The ``edge_objects`` columns this writes (a subscription's bearer tokens sealed with ``vault``)."""
        return {
            "object_type": self.object_type.value,
            "client_id": self.client_id,
            "ven_id": self.ven_id,
            "program_id": self.program_id,
            "event_id": self.event_id,
            "name": self.name,
            "unique_key": self.unique_key,
            "targets": self.targets,
            "body": self._stored_body(vault),
            "derms_key": self.derms_key,
            "head_end_system": self.head_end_system,
            "nic_id": self.nic_id,
        }

    def _stored_body(self, vault: TokenVault) -> dict[str, Any]:
        body = {k: v for k, v in self.body.items() if k != "targets"}
        if self.object_type is ObjectType.SUBSCRIPTION:  # a subscriber's credential: sealed at rest
            body = vault.seal_subscription(body)
        return body


def conflict(detail: str) -> Conflict:
    """The refusal (409) of an object that would break a uniqueness rule, or may not be changed."""
    return Conflict("conflict", "Conflict", detail)


def _name_conflict(new: NewObject) -> Conflict:
    # Generic on purpose: a venName is unique in the whole VTN (Definition.md), so it may be taken by another
    # aggregator's ven; the answer says that the name is taken, never whose it is nor echoes it back.
    what = {ObjectType.PROGRAM: "programName", ObjectType.VEN: "venName", ObjectType.RESOURCE: "resourceName"}
    field = what.get(new.object_type, "name")
    scope = "its ven" if new.object_type is ObjectType.RESOURCE else "this VTN"
    return Conflict(
        "conflict",
        "Conflict",
        f"This {field} is not available: it must be unique in {scope}. Choose another.",
        errors=[FieldError(field=f"body.{field}", message="is not available")],
    )


async def insert_objects(
    connection: AsyncConnection, news: Sequence[NewObject], now: datetime, *, vault: TokenVault
) -> list[Row]:
    """Insert objects and queue their CREATE notifications, in the caller's transaction (one statement for
    many: bulk onboarding). ``vault`` seals a subscription's bearer tokens (and opens them for the
    notifications about it)."""
    rows = [{"id": n.id or new_id(), **n.columns(vault), "created_at": now, "modified_at": now} for n in news]
    try:
        async with connection.begin_nested():
            await connection.execute(insert(o), rows)
    except IntegrityError:
        raise (
            _name_conflict(news[0])
            if len(news) == 1
            else conflict("A name in the batch is already taken (or repeated in the batch); nothing was created.")
        ) from None
    created = [Row.of(r) for r in rows]
    await queue_notifications(connection, Operation.CREATE, created, now, vault=vault)
    return created


async def replace_object(
    connection: AsyncConnection, row: Row, new: NewObject, now: datetime, *, vault: TokenVault
) -> Row:
    """Replace an object's representation (PUT) and queue its UPDATE notification."""
    values = {**new.columns(vault), "modified_at": now}
    try:
        async with connection.begin_nested():
            await connection.execute(update(o).where(o.c.id == row.id).values(**values))
    except IntegrityError:
        raise _name_conflict(new) from None
    changed = Row.of({**values, "id": row.id, "created_at": row.created_at})
    await queue_notifications(connection, Operation.UPDATE, [changed], now, vault=vault)
    return changed


async def delete_objects(connection: AsyncConnection, rows: Sequence[Row], now: datetime, *, vault: TokenVault) -> None:
    """Delete objects and queue their DELETE notifications (due ``now``)."""
    if not rows:
        return
    await queue_notifications(connection, Operation.DELETE, rows, now, vault=vault)
    await connection.execute(delete(o).where(o.c.id.in_([r.id for r in rows])))


async def children_of_ven(connection: AsyncConnection, ven_id: str) -> list[Row]:
    """The resources of a ven (deleted with it)."""
    rows = await connection.execute(
        select(o).where(o.c.object_type == ObjectType.RESOURCE.value, o.c.ven_id == ven_id).order_by(o.c.id)
    )
    return [Row.of(r) for r in rows.mappings()]


async def client_head_end(connection: AsyncConnection, client_id: str) -> str | None:
    """The head-end system of a live client, or None."""
    return await connection.scalar(
        select(edge_clients.c.head_end_system).where(
            edge_clients.c.client_id == client_id, edge_clients.c.revoked_at.is_(None)
        )
    )


# --- notifications -----------------------------------------------------------------------------------


async def queue_notifications(
    connection: AsyncConnection, operation: Operation, rows: Sequence[Row], now: datetime, *, vault: TokenVault
) -> int:
    """Write one notification per matching subscription and object into ``edge_notifications``, due ``now``.

    A subscription matches when one of its ``objectOperations`` names the object's type and the operation,
    its ``programID`` (if any) is the object's program, and its client may see the object — a VEN only its
    own objects, and programs and events by targets as on a read (with target hiding); a subscription's
    ``targets`` narrow it further. The notification carries the object as the subscriber would read it
    (:func:`represent` with ``vault``).
    """
    if not rows:
        return 0
    types = {r.object_type for r in rows}
    subscriptions = (
        await connection.execute(
            select(o.c.id, o.c.client_id, o.c.program_id, o.c.targets, o.c.body, edge_clients.c.role)
            .join(edge_clients, edge_clients.c.client_id == o.c.client_id)
            .where(o.c.object_type == ObjectType.SUBSCRIPTION.value, edge_clients.c.revoked_at.is_(None))
        )
    ).all()
    if not subscriptions:
        return 0
    grants: dict[str, set[str]] = {}
    queued: list[dict[str, Any]] = []
    for subscription in subscriptions:
        for operations in subscription.body.get("objectOperations") or []:
            kinds = {ObjectType(x) for x in operations["objects"]} & types
            if not kinds or operation.value not in operations["operations"]:
                continue
            for row in rows:
                if row.object_type not in kinds:
                    continue
                shown = await _shown_to(connection, subscription, row, grants, vault)
                if shown is None:
                    continue
                body = {"objectType": row.object_type.value, "operation": operation.value, "object": shown}
                if shown.get("targets"):
                    body["targets"] = shown["targets"]
                queued.append(
                    {
                        "subscription_id": subscription.id,
                        "callback_url": operations["callbackUrl"],
                        "bearer_token": operations.get("bearerToken"),  # sealed, as in the subscription
                        "body": body,
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                    }
                )
    if queued:
        await connection.execute(insert(edge_notifications), queued)
    return len(queued)


async def any_subscription_to(connection: AsyncConnection, object_type: ObjectType) -> bool:
    """True when a subscription names ``object_type`` (a cheap test before building notifications)."""
    for (body,) in await connection.execute(select(o.c.body).where(o.c.object_type == ObjectType.SUBSCRIPTION.value)):
        for operations in body.get("objectOperations") or []:
            if object_type.value in operations.get("objects", []):
                return True
    return False


def _program_of(row: Row) -> str | None:
    return row.id if row.object_type is ObjectType.PROGRAM else row.program_id


async def _shown_to(
    connection: AsyncConnection, subscription: Any, row: Row, grants: dict[str, set[str]], vault: TokenVault
) -> dict[str, Any] | None:
    if subscription.program_id is not None and _program_of(row) != subscription.program_id:
        return None
    wanted: list[str] = list(subscription.targets or [])
    if subscription.role != "ven":
        if wanted and not set(wanted) & set(row.targets):
            return None
        return represent(row, vault)
    if row.object_type in OWNED:
        if row.client_id != subscription.client_id:
            return None
        if wanted and not set(wanted) & set(row.targets):
            return None
        return represent(row, vault)
    if row.client_id is not None and row.client_id != subscription.client_id:
        return None
    if row.client_id is not None:
        shown = addressed_targets(row.targets, wanted or None)
        return None if shown is None else represent(row, vault, shown)
    if subscription.client_id not in grants:
        grants[subscription.client_id] = await granted_targets(connection, subscription.client_id)
    effective = effective_targets(grants[subscription.client_id], wanted or None)
    shown = visible_targets(row.targets, effective, bool(wanted))
    return None if shown is None else represent(row, vault, shown)


def by_names(rows: Iterable[Row]) -> dict[str, Row]:
    """Rows by their name."""
    return {r.name: r for r in rows if r.name is not None}
