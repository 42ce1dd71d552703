"""The VTN's writes and the DERMS services they call are one unit of work: a failure in either leaves
neither (an enrollment request is never lost nor forwarded without its resource). Bulk onboarding creates
all or none. A VEN's read of its resources moves their last communication time."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, select

from derbridge.derms.adapters import tables as dm
from derbridge.edge import vtn as vtn_module
from derbridge.edge.tables import edge_objects
from tests.support.cis_rows import cis_row
from tests.support.edge import PREFIX, assert_problem, assert_schema, make_client
from tests.support.enrollment import create_program, load_customers
from tests.support.vtn import enrollment_attributes

F1_SENT = select(func.count()).select_from(dm.outbox).where(dm.outbox.c.type == "enrollment-request.v1")
"""The F1 messages in the DERMS's outbox (it also holds the acknowledgement of the program's sync)."""

if TYPE_CHECKING:
    from tests.support.system import System

pytest_plugins = ["tests.support.system"]


async def _token(system: System, head_end: str = "ECOBEE") -> dict[str, str]:
    client_id, secret = make_client(system, head_end)
    answer = await system.client.post(
        PREFIX + "/auth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


async def _ven(system: System, headers: dict[str, str]) -> str:
    made = await system.client.post(
        PREFIX + "/vens", json={"objectType": "VEN_VEN_REQUEST", "venName": "ecobee"}, headers=headers
    )
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def _resource(ven_id: str, n: int) -> dict[str, Any]:
    return {
        "objectType": "VEN_RESOURCE_REQUEST",
        "resourceName": f"NIC{n}",
        "venID": ven_id,
        "attributes": enrollment_attributes(n),
    }


async def _counts(system: System) -> tuple[int, int]:
    async with system.runtime.async_engine("derms").connect() as connection:
        resources = await connection.scalar(
            select(func.count()).select_from(edge_objects).where(edge_objects.c.object_type == "RESOURCE")
        )
        requests = await connection.scalar(select(func.count()).select_from(dm.enrollment_requests))
    return int(resources or 0), int(requests or 0)


@pytest.mark.parametrize("failing", ["derms", "vtn"])
async def test_a_failure_on_either_side_leaves_neither(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    load_customers(system.runtime, tmp_path, [cis_row(1)])
    await create_program(system)
    headers = await _token(system)
    ven_id = await _ven(system, headers)

    if failing == "derms":
        # The DERMS records the request, then fails before the transaction commits.
        real = vtn_module.f1_service.record_enrollment_requests_in

        async def derms_fails(*args: Any, **kwargs: Any) -> Any:
            await real(*args, **kwargs)
            raise RuntimeError("the DERMS failed")

        monkeypatch.setattr(vtn_module.f1_service, "record_enrollment_requests_in", derms_fails)
    else:
        # The VTN's own write after the DERMS call (the communication status) fails.
        async def vtn_fails(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("the VTN failed")

        monkeypatch.setattr(vtn_module, "record_communication_statuses_in", vtn_fails)

    failed = await system.client.post(PREFIX + "/resources", json=_resource(ven_id, 1), headers=headers)
    assert_problem(failed, 500)
    assert await _counts(system) == (0, 0)
    await system.settle()
    async with system.runtime.async_engine("derms").connect() as connection:
        assert await connection.scalar(F1_SENT) == 0

    monkeypatch.undo()
    made = await system.client.post(PREFIX + "/resources", json=_resource(ven_id, 1), headers=headers)
    assert made.status_code == 201, made.text
    assert await _counts(system) == (1, 1)


async def test_bulk_onboarding_creates_all_or_none(system: System, tmp_path: Path) -> None:
    load_customers(system.runtime, tmp_path, [cis_row(n) for n in (1, 2, 3)])
    await create_program(system)
    headers = await _token(system)
    ven_id = await _ven(system, headers)

    batch = [_resource(ven_id, n) for n in (1, 2, 3)]
    made = await system.client.post(PREFIX + "/resources/batch", json={"resources": batch}, headers=headers)
    assert made.status_code == 201, made.text
    resources = made.json()["resources"]
    assert_schema(resources, "resource", many=True)
    assert [r["resourceName"] for r in resources] == ["NIC1", "NIC2", "NIC3"]
    assert await _counts(system) == (3, 3)
    # One F1 message carries the three requests.
    async with system.runtime.async_engine("derms").connect() as connection:
        assert await connection.scalar(F1_SENT) == 1

    # A taken name anywhere in the batch: nothing of it is created or forwarded.
    again = [_resource(ven_id, 4) | {"resourceName": "NIC4"}, _resource(ven_id, 5) | {"resourceName": "NIC1"}]
    assert_problem(
        await system.client.post(PREFIX + "/resources/batch", json={"resources": again}, headers=headers), 409
    )
    # A bad resource anywhere in the batch is named by its index.
    broken = [
        _resource(ven_id, 6),
        _resource(ven_id, 7) | {"attributes": [a for a in enrollment_attributes(7) if a["type"] != "CUSTOMER_NAME"]},
    ]
    refused = await system.client.post(PREFIX + "/resources/batch", json={"resources": broken}, headers=headers)
    body = assert_problem(refused, 400)
    assert body["errors"][0]["field"] == "body.resources.1.attributes.CUSTOMER_NAME"
    assert await _counts(system) == (3, 3)
    # Another VEN's ven is not there for this client.
    other = await _token(system, "NEST")
    stranger = await system.client.post(
        PREFIX + "/resources/batch", json={"resources": [_resource(ven_id, 8)]}, headers=other
    )
    assert_problem(stranger, 404)


async def test_a_vens_read_moves_the_last_communication_time(system: System, tmp_path: Path) -> None:
    load_customers(system.runtime, tmp_path, [cis_row(1)])
    await create_program(system)
    headers = await _token(system)
    ven_id = await _ven(system, headers)
    made = await system.client.post(PREFIX + "/resources", json=_resource(ven_id, 1), headers=headers)
    assert made.status_code == 201, made.text

    async def last_seen() -> Any:
        async with system.runtime.async_engine("derms").connect() as connection:
            return await connection.scalar(
                select(dm.communication_status.c.last_communication_at).where(
                    dm.communication_status.c.nic_id == "NIC1"
                )
            )

    first = await last_seen()
    system.clock.advance(timedelta(minutes=10))
    listed = await system.client.get(PREFIX + "/resources", headers=headers)
    assert listed.status_code == 200
    assert await last_seen() == first + timedelta(minutes=10)
    system.clock.advance(timedelta(minutes=5))
    one = await system.client.get(PREFIX + f"/resources/{made.json()['id']}", headers=headers)
    assert one.status_code == 200
    assert await last_seen() == first + timedelta(minutes=15)
