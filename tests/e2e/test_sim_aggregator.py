"""``derbridge sim aggregator`` against a real ``derbridge up``: separate processes, a SQLite data dir, the
VTN over HTTP on loopback. The simulated aggregator (an edge client made with ``derbridge edge client add``)
onboards the inventory ``derbridge generate`` wrote, and its devices reach Asset Hub (read back through
``/assethub/v1``); the VEN reads each request's answer from the VTN; a second run finds its VEN again and
registers nothing twice; a wrong secret is refused."""

from __future__ import annotations

import csv
import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.embedded import WAIT, derbridge, embedded_up

pytestmark = pytest.mark.slow

PROGRAM = "SUMMER-BYOT"
HEAD_END = "ECOBEE"


@dataclass
class Server:
    base: str
    auth: dict[str, str]
    log: Path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """``derbridge up`` on a loopback port over ``tmp_path/V`` (SQLite), once it is healthy."""
    with embedded_up(tmp_path, ready="/healthz") as up:
        yield Server(up.base, up.auth, up.log)


def inventory_devices(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def enrollments(server: Server) -> list[dict[str, Any]]:
    """Asset Hub's enrollments of the head-end, every page, each read whole (with its devices)."""
    found: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"head_end_system": HEAD_END, "limit": 1000} | ({"after": after} if after else {})
        page = httpx.get(f"{server.base}/assethub/v1/enrollments", params=params, headers=server.auth, timeout=30)
        assert page.status_code == 200, page.text
        body = page.json()
        found += body["items"]
        after = body["next_after"]
        if after is None:
            break
    whole = []
    for e in found:
        one = httpx.get(f"{server.base}/assethub/v1/enrollments/{e['enrollment_id']}", headers=server.auth, timeout=30)
        assert one.status_code == 200, one.text
        whole.append(one.json())
    return whole


def sim(server: Server, client: dict[str, str], inventory: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return derbridge(
        "sim", "aggregator", "--vtn", server.base, "--client-id", client["client_id"],
        "--client-secret", client["client_secret"], "--inventory", str(inventory), "--once", cwd=cwd,
    )  # fmt: skip


def test_a_simulated_aggregator_enrolls_its_devices_through_the_edge(server: Server, tmp_path: Path) -> None:
    generated = derbridge("generate", "--customers", "50", "--seed", "7", "--out", "U", "--json", cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
    inventory = tmp_path / "U" / "aggregators" / f"{HEAD_END}.csv"
    devices = inventory_devices(inventory)
    assert devices
    imported = derbridge("--data-dir", "V", "cis", "import", "U/cis_extract.csv", "--json", cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    created = httpx.post(
        server.base + "/assethub/v1/programs",
        json={
            "program_code": PROGRAM,
            "name": "Summer BYOT",
            "status": "ACTIVE",
            # Open now (this server runs on the wall clock), whatever dates the generator chose.
            "enrollment_opens_at": "2020-01-01T00:00:00Z",
            "enrollment_closes_at": "2099-12-31T00:00:00Z",
        },
        headers=server.auth,
        timeout=30,
    )
    assert created.status_code == 201, created.text
    # Program sync carries it to the DERMS through the running bridge.
    deadline = time.monotonic() + WAIT
    while httpx.get(f"{server.base}/derms/v1/programs/{PROGRAM}", headers=server.auth, timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "the program did not reach the DERMS\n" + server.log.read_text()[-3000:]
        time.sleep(0.2)
    added = derbridge(
        "--data-dir", "V", "edge", "client", "add", "--name", "ecobee", "--head-end", HEAD_END, "--role", "ven",
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    client = json.loads(added.stdout)
    assert set(client) == {"client_id", "client_secret"}

    # A wrong secret: the VTN refuses the token, the simulator says so in one line and exits 6, having sent
    # nothing.
    refused = sim(server, client | {"client_secret": "wrong"}, inventory, tmp_path)
    assert refused.returncode == 6, refused.stdout + refused.stderr
    assert refused.stderr.strip() == (
        f"error: the VTN refused client {client['client_id']}'s credentials: check --client-id/--client-secret "
        "(derbridge edge client add makes one)"
    )

    first = sim(server, client, inventory, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr + server.log.read_text()[-3000:]
    onboarded = json.loads(first.stdout)
    assert onboarded["onboarded"] == len(devices)

    # The bridge carries each request (F1) to Asset Hub and its answer back; wait until every device's
    # request is answered, as the VEN reads it from the VTN.
    deadline = time.monotonic() + WAIT
    while True:
        again = sim(server, client, inventory, tmp_path)
        assert again.returncode == 0, again.stderr
        statuses: Counter[str] = Counter(json.loads(again.stdout)["enrollment"])
        if statuses["ACCEPTED"] + statuses["REJECTED"] == len(devices):
            break
        assert time.monotonic() < deadline, f"requests still unanswered: {statuses}"
        time.sleep(1)
    # The later runs found the same VEN and registered nothing twice.
    assert json.loads(again.stdout)["ven_id"] == onboarded["ven_id"]
    assert json.loads(again.stdout)["onboarded"] == 0

    # Asset Hub holds one enrollment per device of this aggregator, each from the inventory, in the state the
    # VEN read for it: the accepted ones live, the refused ones REJECTED with their reasons.
    held = enrollments(server)
    assert len(held) == len(devices)
    by_nic = {d["nic_id"]: d for d in devices}
    for enrollment in held:
        assert enrollment["program_code"] in {d["program_code"] for d in devices}  # a planted unknown one too
        assert (enrollment["state"] == "REJECTED") == bool(enrollment["rejections"])
        if enrollment["state"] == "REJECTED":
            assert enrollment["devices"] == []  # a refused request enrolls no device
            continue
        [device] = enrollment["devices"]
        assert enrollment["cis_account_id"] == by_nic[device["nic_id"]]["cis_account_id"]
        assert enrollment["program_code"] == PROGRAM
    accepted = {e["devices"][0]["nic_id"] for e in held if e["state"] != "REJECTED"}
    assert len(accepted) == statuses["ACCEPTED"] > 0
    # Every device the generator meant to be accepted is; the refusals it planted came back as REJECTED.
    assert {d["nic_id"] for d in devices if d["expected_result"] == "ACCEPTED"} <= accepted
    assert statuses["REJECTED"] >= sum(1 for d in devices if d["expected_result"] != "ACCEPTED") > 0
