"""The two operator routes ``derbridge smoke`` needs, through the whole in-process server on SQLite and
PostgreSQL: the edge's clients through the DERMS API (``/derms/v1/edge-clients``) and a small CIS extract
posted to each system (``POST …/cis-imports``). Errors are problem details."""

from __future__ import annotations

from pathlib import Path

import httpx

from derbridge.cis.extract import CIS_COLUMNS
from tests.support.api import assert_problem, cis_row, fields, write_extract

VTN = "/openadr3/3.1.0"


async def _token(api: httpx.AsyncClient, client_id: str, secret: str) -> httpx.Response:
    return await api.post(
        f"{VTN}/auth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        headers={"Authorization": ""},
    )


async def test_an_edge_client_made_through_the_api_gets_tokens_until_revoked(api: httpx.AsyncClient) -> None:
    made = await api.post("/derms/v1/edge-clients", json={"name": " ecobee VEN ", "head_end_system": "ECOBEE"})
    assert made.status_code == 201, made.text
    client = made.json()
    assert client["client_id"].startswith("ven-")
    assert (client["name"], client["head_end_system"], client["role"]) == ("ecobee VEN", "ECOBEE", "ven")
    assert client["revoked_at"] is None
    assert client["client_secret"]

    shown = await api.get(f"/derms/v1/edge-clients/{client['client_id']}")
    assert shown.status_code == 200
    assert "client_secret" not in shown.json()
    assert "secret_hash" not in shown.json()

    token = await _token(api, client["client_id"], client["client_secret"])
    assert token.status_code == 200, token.text
    assert (await _token(api, client["client_id"], "wrong")).status_code == 401

    revoked = await api.post(f"/derms/v1/edge-clients/{client['client_id']}/revoke")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert (await _token(api, client["client_id"], client["client_secret"])).status_code == 401
    # A token issued before the revocation stops working at once.
    vens = await api.get(f"{VTN}/vens", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    assert vens.status_code == 401

    again = await api.post(f"/derms/v1/edge-clients/{client['client_id']}/revoke")
    assert again.status_code == 200
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]  # the first revocation's time stays


async def test_edge_client_refusals_are_problems(api: httpx.AsyncClient) -> None:
    assert_problem(await api.get("/derms/v1/edge-clients/ven-unknown"), 404, "not-found")
    assert_problem(await api.post("/derms/v1/edge-clients/ven-unknown/revoke"), 404, "not-found")
    bad = assert_problem(
        await api.post("/derms/v1/edge-clients", json={"name": "", "head_end_system": "ecobee", "role": "admin"}), 422
    )
    assert set(fields(bad)) == {"body.name", "body.head_end_system", "body.role"}
    # Only the service credential manages clients: not a missing one, and not a VTN client's own token.
    anonymous = await api.post(
        "/derms/v1/edge-clients", json={"name": "x", "head_end_system": "X"}, headers={"Authorization": ""}
    )
    assert_problem(anonymous, 401, "unauthorized")
    made = (
        await api.post("/derms/v1/edge-clients", json={"name": "bl", "head_end_system": "UTIL", "role": "bl"})
    ).json()
    vtn_token = (await _token(api, made["client_id"], made["client_secret"])).json()["access_token"]
    minted = await api.post(
        "/derms/v1/edge-clients",
        json={"name": "x", "head_end_system": "X"},
        headers={"Authorization": f"Bearer {vtn_token}"},
    )
    assert_problem(minted, 401, "unauthorized")


def _csv(tmp_path: Path, *rows: dict[str, str]) -> bytes:
    return write_extract(tmp_path / "extract.csv", list(rows)).read_bytes()


async def _import(api: httpx.AsyncClient, system: str, body: bytes) -> httpx.Response:
    return await api.post(f"/{system}/v1/cis-imports", content=body, headers={"Content-Type": "text/csv"})


async def test_a_cis_extract_posted_to_each_system_loads_there_and_closes_an_account(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    extract = _csv(
        tmp_path,
        cis_row("P-1", "Ada Lovelace", "A-1", "ACTIVE", "PR-1", "SP-1"),
        cis_row("P-2", "Blaise Pascal", "A-2", "BOGUS", "PR-2", "SP-2"),
    )
    for system in ("assethub", "derms"):
        loaded = await _import(api, system, extract)
        assert loaded.status_code == 200, loaded.text
        body = loaded.json()
        assert (body["system"], body["read"], body["inserted"], body["rejected"]) == (system, 2, 1, 1)
        assert body["rejected_rows"] == [
            {"line": 3, "column": "account_status", "reason": body["rejected_rows"][0]["reason"]}
        ]
        again = (await _import(api, system, extract)).json()
        assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 1)
    # Loaded into the system it was posted to, and nowhere else: each is its own API.
    assert (await api.get("/assethub/v1/accounts/A-1")).json()["status"] == "ACTIVE"
    assert (await api.get("/derms/v1/customers/A-1")).json()["status"] == "ACTIVE"
    assert_problem(await api.get("/assethub/v1/accounts/A-2"), 404)

    closed = _csv(tmp_path, cis_row("P-1", "Ada Lovelace", "A-1", "CLOSED", "PR-1", "SP-1"))
    assert (await _import(api, "assethub", closed)).json()["updated"] == 1
    assert (await api.get("/assethub/v1/accounts/A-1")).json()["status"] == "CLOSED"
    assert (await api.get("/derms/v1/customers/A-1")).json()["status"] == "ACTIVE"


async def test_a_body_that_is_not_a_cis_extract_loads_nothing(api: httpx.AsyncClient) -> None:
    header = ",".join(c for c in CIS_COLUMNS if c != "division")
    row = ",".join(["P-1", "Ada"] + ["x"] * (len(CIS_COLUMNS) - 3))
    refused = assert_problem(await _import(api, "assethub", f"{header}\n{row}\n".encode()), 422, "not-a-cis-extract")
    assert "division" in refused["detail"]
    assert "Nothing was loaded" in refused["detail"]
    assert (await api.get("/assethub/v1/persons")).json()["items"] == []
    assert_problem(await _import(api, "derms", b""), 422, "not-a-cis-extract")
    wrong_type = await api.post("/derms/v1/cis-imports", json={"rows": []})
    assert_problem(wrong_type, 415, "unsupported-media-type")
    anonymous = await api.post(
        "/derms/v1/cis-imports", content=b"x", headers={"Content-Type": "text/csv", "Authorization": ""}
    )
    assert_problem(anonymous, 401, "unauthorized")
