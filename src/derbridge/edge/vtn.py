"""The VTN's use cases: one function per operation of ``openadr3.yaml``, each one unit of work, with the
rules of each object type and the mapping to the DERMS (docs/edge.md):

- a resource with enrollment attributes is an enrollment request (F1), recorded by the DERMS's
  :func:`~derbridge.derms.services.enrollment_requests.record_enrollment_requests`; the resource then shows
  the request's status, state, enrollment id and rejections as VTN-written attributes;
- a VEN's write about a resource, and every report, records the resource's communication status
  (:mod:`derbridge.derms.services.communication`); an ``OPERATING_STATE`` payload gives its state;
- a report on an event the DERMS called carries per-resource outcomes to
  :func:`~derbridge.derms.services.outcomes.record_outcomes` (F7);
- events mirror the DERMS's program events (:mod:`derbridge.edge.mirror`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.contracts import enrollment_request as f1
from derbridge.contracts.event_outcome import DeviceOutcome
from derbridge.derms.adapters import tables as dm
from derbridge.derms.api.schemas import CommunicationReport, CommunicationStatus
from derbridge.derms.services import enrollment_requests as f1_service
from derbridge.derms.services.communication import record_communication_statuses_in, touch_communication
from derbridge.derms.services.outcomes import record_outcomes_in
from derbridge.edge import domain, fresh_readings, store
from derbridge.edge.auth import Principal
from derbridge.edge.schemas import (
    BlResourceRequest,
    BlVenRequest,
    EventRequest,
    ObjectType,
    ProgramRequest,
    ReportRequest,
    SubscriptionRequest,
    VenResourceRequest,
    VenVenRequest,
    dump,
)
from derbridge.edge.store import NewObject, Row, conflict, represent
from derbridge.edge.tables import edge_objects as o
from derbridge.edge.token_vault import TokenVault
from derbridge.edge.webhooks import CallbackChecker
from derbridge.errors import Conflict, FieldError, Invalid, NotFound, NotPermitted
from derbridge.infra.clock import Clock
from derbridge.infra.columnar import id_list
from derbridge.infra.ids import new_id
from derbridge.settings import EdgeSettings

NIC_MAX = 64


def bad_request(detail: str, errors: Sequence[tuple[str, str]] = ()) -> Invalid:
    """The refusal (the spec's 400) of a request, naming the fields at fault."""
    return Invalid(
        "bad-request",
        "Bad Request",
        detail,
        errors=[FieldError(field=f, message=m) for f, m in errors] or None,
    )


def forbidden(detail: str) -> NotPermitted:
    """The refusal (403) of what this client may not do."""
    return NotPermitted("forbidden", "Forbidden", detail)


@dataclass
class Vtn:
    """The VTN over the DERMS database: every operation of the API."""

    engine: AsyncEngine
    derms_instance_id: str
    callbacks: CallbackChecker
    clock: Clock
    """The business clock: the time every write is stamped with and its notifications fall due."""
    vault: TokenVault
    """Seals a subscription's bearer tokens at rest, and opens them to show the subscription to its owner."""
    limits: EdgeSettings = field(default_factory=EdgeSettings)
    """The sizes and quotas a client's objects are held to (``edge.max_*``, ``edge.page_max_bytes``)."""

    # --- limits (issue 15, finding 6) ------------------------------------------------------------

    def _check_size(self, body: dict[str, Any], prefix: str, whole: bool = False) -> None:
        """Refuse (400, the code every write may answer) a ven or resource whose attributes, or a ven,
        resource or subscription whose representation, is larger than the limits; ``whole``: measure the
        whole body (a subscription), else its attributes, targets and names."""
        limits = self.limits
        attributes = body.get("attributes") or []
        sizes = attribute_sizes(attributes)
        errors = [
            (f"{prefix}.attributes.{i}", f"is {size} characters; the limit is {limits.max_attribute_chars}")
            for i, size in enumerate(sizes)
            if size > limits.max_attribute_chars
        ]
        if whole:
            total = len(json.dumps(body))
        else:
            total = sum(sizes) + sum(len(str(v)) for k, v in body.items() if k != "attributes")
        if not errors and total > limits.max_object_chars:
            errors.append((prefix, f"is {total} characters; the limit is {limits.max_object_chars}"))
        if errors:
            raise Invalid(
                "too-large",
                "Bad Request",
                "The object is larger than this VTN accepts; see errors for each limit.",
                errors=[FieldError(field=f, message=m) for f, m in errors[:50]],
            )

    async def _check_quota(
        self,
        connection: AsyncConnection,
        object_type: ObjectType,
        client_id: str,
        adding: int,
        refusal: type[Conflict | Invalid],
    ) -> None:
        """Refuse a create that would take a client past its quota of ``object_type`` (``refusal``: a
        :class:`Conflict`, 409, where the operation may answer it, else :class:`Invalid`, the spec's 400)."""
        limit = {
            ObjectType.VEN: self.limits.max_vens_per_client,
            ObjectType.RESOURCE: self.limits.max_resources_per_client,
            ObjectType.SUBSCRIPTION: self.limits.max_subscriptions_per_client,
            ObjectType.REPORT: self.limits.max_reports_per_client,
        }[object_type]
        held = await count_owned(connection, object_type, client_id)
        if held + adding > limit:
            kind = object_type.value.lower()
            raise refusal(
                "quota-exceeded",
                "Conflict" if refusal is Conflict else "Bad Request",
                f"This client holds {held} {kind}s; the limit is {limit}. Delete some, or ask the utility "
                "to raise the limit.",
            )

    # --- rendering --------------------------------------------------------------------------------

    async def render(self, rows: Sequence[Row]) -> list[dict[str, Any]]:
        """Objects as the API answers them; enrollment resources with their status attributes."""
        enrolling = [
            r
            for r in rows
            if r.object_type is ObjectType.RESOURCE
            and r.head_end_system
            and domain.is_enrollment(r.body.get("attributes"))
        ]
        statuses: dict[tuple[str, str], dict[str, Any]] = {}
        if enrolling:
            table = dm.enrollment_requests
            keys = [(r.head_end_system, r.id) for r in enrolling]
            async with self.engine.connect() as connection:
                for start in range(0, len(keys), 500):
                    found = await connection.execute(
                        select(*f1_service.STATUS_COLUMNS).where(
                            tuple_(table.c.head_end_system, table.c.request_id).in_(keys[start : start + 500])
                        )
                    )
                    for mapping in found.mappings():
                        statuses[(mapping["head_end_system"], mapping["request_id"])] = f1_service.request_status(
                            dict(mapping)
                        )
        return [
            represent(
                r, self.vault, extra_attributes=domain.status_attributes(statuses.get((r.head_end_system or "", r.id)))
            )
            for r in rows
        ]

    # --- programs and events (business logic) ------------------------------------------------------

    async def create_program(self, request: ProgramRequest) -> Row:
        """A program of the business logic."""
        new = _program(request)
        async with self.engine.begin() as connection:
            return (await store.insert_objects(connection, [new], self.clock.now(), vault=self.vault))[0]

    async def update_program(self, principal: Principal, program_id: str, request: ProgramRequest) -> Row:
        """Replace a program; one the DERMS mirrors may not be changed here."""
        async with self.engine.begin() as connection:
            row = await store.get_in(connection, principal, ObjectType.PROGRAM, program_id)
            _not_mirrored(row)
            return await store.replace_object(connection, row, _program(request), self.clock.now(), vault=self.vault)

    async def create_event(self, principal: Principal, request: EventRequest) -> Row:
        """An event of the business logic (sent to VENs as is; the DERMS does not know it)."""
        async with self.engine.begin() as connection:
            await self._program_exists(connection, principal, request.programID)
            return (await store.insert_objects(connection, [_event(request)], self.clock.now(), vault=self.vault))[0]

    async def update_event(self, principal: Principal, event_id: str, request: EventRequest) -> Row:
        """Replace an event; one the DERMS mirrors may not be changed here (cancel it in the DERMS)."""
        async with self.engine.begin() as connection:
            row = await store.get_in(connection, principal, ObjectType.EVENT, event_id)
            _not_mirrored(row)
            await self._program_exists(connection, principal, request.programID)
            return await store.replace_object(connection, row, _event(request), self.clock.now(), vault=self.vault)

    async def _program_exists(self, connection: AsyncConnection, principal: Principal, program_id: str) -> None:
        try:
            await store.get_in(connection, principal, ObjectType.PROGRAM, program_id)
        except NotFound:
            raise bad_request(f"No program {program_id!r}.", [("body.programID", "names no program")]) from None

    async def delete(self, principal: Principal, object_type: ObjectType, object_id: str) -> Row:
        """Delete an object (a ven with its resources). Mirrored programs and events are the DERMS's."""
        async with self.engine.begin() as connection:
            row = await store.get_in(connection, principal, object_type, object_id)
            if object_type in (ObjectType.PROGRAM, ObjectType.EVENT):
                # DELETE may answer 400 but not 409 (openadr3.yaml); PUT keeps its 409.
                _not_mirrored(row, refusal=Invalid)
            doomed = [row]
            if object_type is ObjectType.VEN:
                doomed += await store.children_of_ven(connection, row.id)
            await store.delete_objects(connection, doomed, self.clock.now(), vault=self.vault)
            return row

    # --- vens ---------------------------------------------------------------------------------------

    async def create_ven(self, principal: Principal, request: BlVenRequest | VenVenRequest) -> Row:
        """A ven: a VEN registers itself (clientID from its token); the business logic names the client
        and may grant targets."""
        new = self._ven(principal, request, None)
        async with self.engine.begin() as connection:
            if new.head_end_system is None:
                new.head_end_system = await store.client_head_end(connection, new.client_id or "")
            await self._check_quota(connection, ObjectType.VEN, new.client_id or "", 1, Invalid)
            try:
                return (await store.insert_objects(connection, [new], self.clock.now(), vault=self.vault))[0]
            except Conflict as refused:
                # POST /vens may answer 400 but not 409 (openadr3.yaml): a taken venName is a bad request.
                raise Invalid("bad-request", "Bad Request", refused.detail, errors=refused.errors) from None

    async def update_ven(self, principal: Principal, ven_id: str, request: BlVenRequest | VenVenRequest) -> Row:
        """Replace a ven. A VEN keeps the targets the business logic granted."""
        async with self.engine.begin() as connection:
            row = await store.get_in(connection, principal, ObjectType.VEN, ven_id)
            new = self._ven(principal, request, row)
            if principal.is_ven:
                new.targets = row.targets
            else:
                new.head_end_system = await store.client_head_end(connection, new.client_id or "")
            return await store.replace_object(connection, row, new, self.clock.now(), vault=self.vault)

    def _ven(self, principal: Principal, request: BlVenRequest | VenVenRequest, row: Row | None) -> NewObject:
        if principal.is_ven:
            if not isinstance(request, VenVenRequest):
                raise forbidden("A VEN registers itself with VEN_VEN_REQUEST; only the business logic grants targets.")
            client_id, targets, head_end = principal.client_id, (row.targets if row else []), principal.head_end_system
        else:
            if not isinstance(request, BlVenRequest):
                raise bad_request(
                    "The business logic writes vens with BL_VEN_REQUEST, naming the VEN's clientID.",
                    [("body.objectType", "must be BL_VEN_REQUEST")],
                )
            client_id, targets, head_end = request.clientID, list(request.targets or []), None
        body = dump(request)
        body.pop("objectType", None)
        body["clientID"] = client_id
        self._check_size(body, "body")
        return NewObject(
            ObjectType.VEN,
            body,
            _dedupe(targets),
            client_id=client_id,
            name=request.venName,
            unique_key=request.venName,
            head_end_system=head_end,
        )

    # --- resources and enrollment (F1) --------------------------------------------------------------

    async def create_resources(
        self, principal: Principal, requests: Sequence[BlResourceRequest | VenResourceRequest]
    ) -> list[Row]:
        """Resources of vens visible to the caller, in one transaction; those with enrollment attributes are
        enrollment requests, forwarded to Asset Hub by the DERMS in one F1 message per head-end."""
        now = self.clock.now()
        async with self.engine.begin() as connection:
            vens: dict[str, Row] = {}
            news: list[NewObject] = []
            for i, request in enumerate(requests):
                if request.venID not in vens:
                    vens[request.venID] = await self._ven_for(connection, principal, request.venID, i, len(requests))
                index = i if len(requests) > 1 else None  # one resource: its fields are body.*, as in _ven_for
                news.append(await self._resource(connection, principal, request, vens[request.venID], None, index))
            adding: dict[str, int] = {}
            for new in news:
                adding[new.client_id or ""] = adding.get(new.client_id or "", 0) + 1
            for client_id, count in adding.items():
                await self._check_quota(connection, ObjectType.RESOURCE, client_id, count, Conflict)
            enrollments = self._enrollments(news, requests, now)
            rows = await store.insert_objects(connection, news, now, vault=self.vault)
            await self._forward(connection, enrollments, now)
            await _heard_from(connection, principal, rows, now)
        return rows

    async def update_resource(
        self, principal: Principal, resource_id: str, request: BlResourceRequest | VenResourceRequest
    ) -> Row:
        """Replace a resource. Its venID stays; its enrollment attributes may not change once sent."""
        now = self.clock.now()
        async with self.engine.begin() as connection:
            row = await store.get_in(connection, principal, ObjectType.RESOURCE, resource_id)
            if request.venID != row.ven_id:
                raise conflict(
                    f"A resource stays under its ven ({row.ven_id}); create a new one under {request.venID}."
                )
            ven = await store.get_in(connection, principal, ObjectType.VEN, request.venID)
            new = await self._resource(connection, principal, request, ven, row, None)
            before = domain.enrollment_attributes(row.body.get("attributes"))
            if before and domain.enrollment_attributes(new.body.get("attributes")) != before:
                raise conflict(
                    "The enrollment attributes of a resource were sent as an enrollment request and cannot change; "
                    "register a new resource for a new request."
                )
            enrollments = {} if before else self._enrollments([new], [request], now)
            changed = await store.replace_object(connection, row, new, now, vault=self.vault)
            await self._forward(connection, enrollments, now)
            await _heard_from(connection, principal, [changed], now)
        return changed

    async def _ven_for(self, connection: AsyncConnection, principal: Principal, ven_id: str, i: int, n: int) -> Row:
        try:
            return await store.get_in(connection, principal, ObjectType.VEN, ven_id)
        except NotFound:
            field = "body.venID" if n == 1 else f"body.resources.{i}.venID"
            raise NotFound(
                "not-found",
                "Not Found",
                f"No ven {ven_id!r} is visible to this client.",
                errors=[FieldError(field=field, message="names no ven of this client")],
            ) from None

    async def _resource(
        self,
        connection: AsyncConnection,
        principal: Principal,
        request: BlResourceRequest | VenResourceRequest,
        ven: Row,
        row: Row | None,
        index: int | None,
    ) -> NewObject:
        prefix = "body" if index is None else f"body.resources.{index}"
        if principal.is_ven:
            if not isinstance(request, VenResourceRequest):
                raise forbidden(
                    "A VEN registers resources with VEN_RESOURCE_REQUEST; only the business logic grants targets."
                )
            client_id, targets = principal.client_id, list(row.targets if row else [])
        else:
            if not isinstance(request, BlResourceRequest):
                raise bad_request(
                    "The business logic writes resources with BL_RESOURCE_REQUEST.",
                    [(f"{prefix}.objectType", "must be BL_RESOURCE_REQUEST")],
                )
            if request.clientID != ven.client_id:
                raise bad_request(
                    "A resource belongs to its ven's client.",
                    [(f"{prefix}.clientID", f"must be the ven's clientID {ven.client_id!r}")],
                )
            client_id, targets = request.clientID, list(request.targets or [])
        # Only the business logic grants targets (Definition.md). The VTN no longer grants a resource its own
        # name: a VEN chooses that name, so it could take a target meant for another aggregator. Events the
        # VTN addresses to one client (mirrored, fresh readings) still name its resources as targets; they
        # are visible to that client alone (store.addressed_targets).
        targets = _dedupe(targets)
        # One dump serves both the attributes and the stored body (a 5,000-resource batch dumped each twice);
        # its attribute dicts are fresh, so they are kept rather than copied.
        body = dump(request)
        attributes = [a for a in body.get("attributes") or [] if a["type"] not in domain.VTN_ATTRIBUTES]
        head_end = ven.head_end_system
        nic = domain.attribute_value(attributes, "NIC_ID", request.resourceName)
        if not isinstance(nic, str) or not 0 < len(nic) <= NIC_MAX or "/" in nic or nic != nic.strip():
            raise bad_request(
                "The device's NIC id is not valid.",
                [(f"{prefix}.attributes.NIC_ID", "1-64 characters, no '/' or spaces at the ends")],
            )
        body.pop("objectType", None)
        body["clientID"] = client_id
        body["attributes"] = attributes
        if not attributes:
            body.pop("attributes")
        self._check_size(body, prefix)
        return NewObject(
            ObjectType.RESOURCE,
            body,
            targets,
            id=row.id if row else new_id(),
            client_id=client_id,
            ven_id=ven.id,
            name=request.resourceName,
            unique_key=f"{ven.id}/{request.resourceName}",
            head_end_system=head_end,
            nic_id=nic,
        )

    def _enrollments(
        self, news: Sequence[NewObject], requests: Sequence[Any], now: datetime
    ) -> dict[str, list[f1.EnrollmentRequest]]:
        by_head_end: dict[str, list[f1.EnrollmentRequest]] = {}
        errors: list[tuple[str, str]] = []
        for i, new in enumerate(news):
            values = domain.attribute_map(new.body.get("attributes"))
            if domain.ENROLLMENT_PROGRAM not in values:
                continue
            prefix = "body.attributes" if len(news) == 1 else f"body.resources.{i}.attributes"
            if new.head_end_system is None:
                errors.append((prefix, "the ven's client has no head-end system: it cannot enroll devices"))
                continue
            try:
                request = domain.enrollment_request_of(new.id or "", new.head_end_system, values, now)
            except domain.EnrollmentAttributesInvalid as invalid:
                errors += [(f"{prefix}.{field}", message) for field, message in invalid.errors]
                continue
            by_head_end.setdefault(new.head_end_system, []).append(request)
        if errors:
            raise bad_request("The enrollment attributes do not make an enrollment request; see errors.", errors[:100])
        return by_head_end

    async def _forward(
        self, connection: AsyncConnection, enrollments: dict[str, list[f1.EnrollmentRequest]], now: datetime
    ) -> None:
        # In the resources' transaction: the DERMS records the requests (idempotent on head-end and the
        # resource id as request id) and writes the F1 message, so a failure of either leaves neither.
        for head_end, requests in enrollments.items():
            await f1_service.record_enrollment_requests_in(
                connection, head_end, requests, derms_instance_id=self.derms_instance_id, now=now
            )

    async def heard_about(self, principal: Principal, rows: Sequence[Row]) -> None:
        """A VEN read these resources: their last communication time moves to now (one statement)."""
        if not principal.is_ven:
            return
        nic_ids = [r.nic_id for r in rows if r.nic_id is not None and r.head_end_system == principal.head_end_system]
        if nic_ids:
            async with self.engine.begin() as connection:
                await touch_communication(connection, principal.head_end_system, nic_ids, self.clock.now())

    # --- reports (outcomes, F7) -----------------------------------------------------------------------

    async def create_report(self, principal: Principal, request: ReportRequest) -> Row:
        """A VEN's report on an event: outcomes to the DERMS when the DERMS called the event, then stored."""
        return await self._report(principal, request, None)

    async def update_report(self, principal: Principal, report_id: str, request: ReportRequest) -> Row:
        """Replace a report: its outcomes replace the ones it sent before."""
        return await self._report(principal, request, report_id)

    async def _report(self, principal: Principal, request: ReportRequest, report_id: str | None) -> Row:
        now = self.clock.now()
        body = dump(request)
        # One unit of work: the outcomes (F7), the report, the communication status it implies and the
        # answer to a status check it completes commit together, or none of them does.
        async with self.engine.begin() as connection:
            try:
                event = await _reported_event(connection, principal, request.eventID)
            except NotFound:
                # 400, not 404: POST and PUT /reports may answer 400 but not 404 (openadr3.yaml).
                raise Invalid(
                    "bad-request",
                    "Bad Request",
                    f"No event {request.eventID!r} is visible to this client.",
                    errors=[FieldError(field="body.eventID", message="names no event of this client")],
                ) from None
            names = [r.resourceName for r in request.resources]
            mine = await _resources_named(connection, principal, names, event.client_id and event.ven_id)
            unknown = [
                (f"body.resources.{i}.resourceName", f"{n!r} is not a resource of this client")
                for i, n in enumerate(names)
                if n not in mine
            ]
            if unknown:
                raise bad_request("The report names resources this client has not registered.", unknown[:50])
            parsed: list[domain.ResourceReport] = []
            errors: list[tuple[str, str]] = []
            for i, resource in enumerate(body["resources"]):
                try:
                    parsed.append(domain.read_resource_report(i, resource, None))
                except domain.ReportPayloadsInvalid as invalid:
                    errors += [(f"body.{field}", message) for field, message in invalid.errors]
            if errors:
                raise bad_request("The report's payloads are not valid; see errors.", errors[:50])
            outcomes = [
                DeviceOutcome(
                    head_end_system=principal.head_end_system, nic_id=mine[p.resource_name].nic_id or "", **p.outcome
                )
                for p in parsed
                if p.outcome is not None
            ]
            if outcomes and domain.is_reading_event(event.derms_key):
                raise bad_request(
                    "This event asks for status readings, not outcomes; report outcomes on the program event.",
                    [("body.resources", "carries outcome payloads")],
                )
            if outcomes and event.event_id is not None and event.derms_key is not None:
                # A refusal is a domain error: an Invalid one answers the spec's 400 (install_problems).
                await record_outcomes_in(connection, event.event_id, outcomes, now)
            body["clientID"] = principal.client_id
            new = NewObject(
                ObjectType.REPORT,
                body,
                [],
                client_id=principal.client_id,
                program_id=event.program_id,
                event_id=event.id,
                name=request.reportName,
            )
            if report_id is None:
                await self._check_quota(connection, ObjectType.REPORT, principal.client_id, 1, Conflict)
                row = (await store.insert_objects(connection, [new], now, vault=self.vault))[0]
            else:
                old = await store.get_in(connection, principal, ObjectType.REPORT, report_id)
                row = await store.replace_object(connection, old, new, now, vault=self.vault)
            named = [mine[n] for n in dict.fromkeys(names)]
            await _report_heard_from(connection, principal, named, now, {p.resource_name: p for p in parsed})
            if domain.parse_check_event_key(event.derms_key) is not None:
                # Only a fresh-reading event needs the resources' whole rows (a report of one or a few).
                full = await _rows_by_id(connection, [r.id for r in named])
                await fresh_readings.answer_if_requested(connection, event, full, now, vault=self.vault)
        return row

    # --- subscriptions -----------------------------------------------------------------------------

    async def create_subscription(self, principal: Principal, request: SubscriptionRequest) -> Row:
        """A subscription of the caller, once each callback URL proved it is live and the caller's."""
        new = await self._subscription(principal, request)
        async with self.engine.begin() as connection:
            await self._check_quota(connection, ObjectType.SUBSCRIPTION, principal.client_id, 1, Conflict)
            return (await store.insert_objects(connection, [new], self.clock.now(), vault=self.vault))[0]

    async def update_subscription(
        self, principal: Principal, subscription_id: str, request: SubscriptionRequest
    ) -> Row:
        """Replace a subscription (its callbacks checked again)."""
        async with self.engine.connect() as connection:
            await store.get_in(connection, principal, ObjectType.SUBSCRIPTION, subscription_id)
        new = await self._subscription(principal, request)
        async with self.engine.begin() as connection:
            row = await store.get_in(connection, principal, ObjectType.SUBSCRIPTION, subscription_id)
            return await store.replace_object(connection, row, new, self.clock.now(), vault=self.vault)

    async def _subscription(self, principal: Principal, request: SubscriptionRequest) -> NewObject:
        self._check_size(dump(request), "body", whole=True)  # before any callback is called
        if request.programID is not None:
            async with self.engine.connect() as connection:
                try:
                    await store.get_in(connection, principal, ObjectType.PROGRAM, request.programID)
                except NotFound:
                    raise bad_request(
                        f"No program {request.programID!r}.", [("body.programID", "names no program")]
                    ) from None
        errors: list[tuple[str, str]] = []
        checked: dict[str, str | None] = {}  # one echo request per distinct URL, however often it is named
        for i, operation in enumerate(request.objectOperations):
            if operation.callbackUrl not in checked:
                checked[operation.callbackUrl] = await self.callbacks.check(operation.callbackUrl)
            problem = checked[operation.callbackUrl]
            if problem is not None:
                errors.append((f"body.objectOperations.{i}.callbackUrl", problem))
        if errors:
            raise bad_request("A callback URL was refused; see errors.", errors)
        body = dump(request)
        body["clientID"] = principal.client_id
        return NewObject(
            ObjectType.SUBSCRIPTION,
            body,
            list(request.targets or []),
            client_id=principal.client_id,
            program_id=request.programID,
            name=request.clientName,
        )


def attribute_sizes(attributes: Sequence[Any]) -> list[int]:
    """The size of each ``valuesMap`` in characters: its type and its values (a number or a point counts
    as 24). Measured on what the request parsed, without encoding it again."""
    return [
        len(str(a["type"])) + sum(len(v) if isinstance(v, str) else 24 for v in a.get("values") or [])
        for a in attributes
    ]


async def count_owned(connection: AsyncConnection, object_type: ObjectType, client_id: str) -> int:
    """How many objects of ``object_type`` a client holds (the index on type, client and id answers it)."""
    found = await connection.scalar(
        select(func.count()).select_from(o).where(o.c.object_type == object_type.value, o.c.client_id == client_id)
    )
    return int(found or 0)


async def _reported_event(connection: AsyncConnection, principal: Principal, event_id: str) -> Row:
    """The event a report is about, as :func:`store.get_in` reads it for ``principal``.

    A report needs to know only whether the VEN may see the event, not which of its targets it may see, so
    a targeted event asks the database whether one of its targets is granted (:func:`store.any_target_granted`)
    instead of decoding the targets of every resource of the client on every report (ten reports of a
    client with 100,000 resources read a million rows). The event's targets are left as stored."""
    found = (
        (await connection.execute(select(o).where(o.c.id == event_id, o.c.object_type == ObjectType.EVENT.value)))
        .mappings()
        .first()
    )
    if found is None:
        raise store.not_found(ObjectType.EVENT, event_id)
    if not principal.is_ven:
        return Row.of(found)
    if found["client_id"] == principal.client_id:
        return Row.of(found)  # addressed to this client by the VTN: its targets are this client's resources
    targets = found["targets"] or []
    if found["client_id"] is None and (
        not targets or await store.any_target_granted(connection, principal.client_id, targets)
    ):
        return Row.of(found)
    raise store.not_found(ObjectType.EVENT, event_id)


class _Named(NamedTuple):
    """A resource a report names: its identity, all a report needs of it."""

    id: str
    name: str
    head_end_system: str | None
    nic_id: str | None


async def _resources_named(
    connection: AsyncConnection, principal: Principal, names: Sequence[str], ven_id: str | None
) -> dict[str, _Named]:
    """The caller's resources by name (under ``ven_id`` when the event is addressed to one ven); of two
    with one name, the newer.

    A report needs their identity only — id, name, head end, nic id — so nothing else is read: a report of
    10,000 resources spent most of its time decoding the stored representations, and then making a whole
    ``Row`` (times converted, a dict per row) of each. The names travel as one parameter (``id_list``)."""
    statement = select(o.c.id, o.c.name, o.c.head_end_system, o.c.nic_id).where(
        o.c.object_type == ObjectType.RESOURCE.value,
        id_list(connection, o.c.name, list(dict.fromkeys(names)), "names"),
        o.c.client_id == principal.client_id,
    )
    if ven_id is not None:
        statement = statement.where(o.c.ven_id == ven_id)
    result = await connection.execute(statement.order_by(o.c.id))
    return {r[1]: _Named._make(r) for r in result.tuples() if r[1] is not None}


async def _rows_by_id(connection: AsyncConnection, ids: Sequence[str]) -> list[Row]:
    """The stored rows of these objects, in the order given."""
    found = await connection.execute(select(o).where(id_list(connection, o.c.id, list(ids), "ids")))
    rows = {r.id: r for r in (Row.of(m) for m in found.mappings())}
    return [rows[i] for i in ids if i in rows]


async def _report_heard_from(
    connection: AsyncConnection,
    principal: Principal,
    resources: Sequence[_Named],
    now: datetime,
    said: dict[str, domain.ResourceReport],
) -> None:
    """:func:`_heard_from` for a report's resources (``said``: what the report says of each, by name)."""
    if not principal.is_ven:
        return
    head_end = principal.head_end_system
    reports = []
    for r in resources:
        if r.nic_id is None or r.head_end_system != head_end:
            continue
        report = said.get(r.name)
        reports.append(
            CommunicationReport(
                head_end_system=head_end,
                nic_id=r.nic_id,
                communication_status=CommunicationStatus(
                    (report.communication_status if report else None) or CommunicationStatus.ONLINE.value
                ),
                last_communication_at=now,
                operating_state=report.operating_state if report else None,
                source=head_end,
            )
        )
    await record_communication_statuses_in(connection, reports)


async def _heard_from(
    connection: AsyncConnection,
    principal: Principal,
    rows: Sequence[Row],
    now: datetime,
    said: dict[str, domain.ResourceReport] | None = None,
) -> None:
    """Record, in the caller's transaction, that the aggregator just spoke about these resources: ONLINE
    now, unless its report gave a COMMUNICATION_STATUS; an OPERATING_STATE gives the state."""
    if not principal.is_ven:
        return
    reports = []
    for r in rows:
        if r.nic_id is None or r.head_end_system != principal.head_end_system:
            continue
        report = (said or {}).get(r.id)
        reports.append(
            CommunicationReport(
                head_end_system=principal.head_end_system,
                nic_id=r.nic_id,
                communication_status=CommunicationStatus(
                    (report.communication_status if report else None) or CommunicationStatus.ONLINE.value
                ),
                last_communication_at=now,
                operating_state=report.operating_state if report else None,
                source=principal.head_end_system,
            )
        )
    await record_communication_statuses_in(connection, reports)


def _not_mirrored(row: Row, refusal: type[Conflict | Invalid] = Conflict) -> None:
    """Refuse to change an object the DERMS mirrors: a :class:`Conflict` (409), or :class:`Invalid` (the
    spec's 400) where the operation may not answer 409."""
    if row.derms_key is not None:
        detail = (
            f"{row.object_type.value.lower()} {row.id} mirrors the DERMS; change it there "
            "(an event is withdrawn by cancelling it in the DERMS)."
        )
        raise conflict(detail) if refusal is Conflict else Invalid("bad-request", "Bad Request", detail)


def _dedupe(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _program(request: ProgramRequest) -> NewObject:
    body = dump(request)
    return NewObject(
        ObjectType.PROGRAM,
        body,
        _dedupe(request.targets or []),
        name=request.programName,
        unique_key=request.programName,
    )


def _event(request: EventRequest) -> NewObject:
    body = dump(request)
    body.setdefault("intervals", [])
    return NewObject(
        ObjectType.EVENT, body, _dedupe(request.targets or []), program_id=request.programID, name=request.eventName
    )
