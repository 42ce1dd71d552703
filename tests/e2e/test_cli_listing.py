"""``derbridge enrollments|devices|events list|show`` as an operator runs them on the demo's systems: real
processes reading the databases (no server running), real exit statuses."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from derbridge.assethub.api import schemas as hub
from derbridge.derms.api import schemas as grid
from tests.support.embedded import derbridge

pytestmark = pytest.mark.slow


class Systems:
    """The demo's systems, and a way to run a command on them."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    def run(self, *args: str) -> Any:
        return derbridge("--data-dir", "V/demo", *args, cwd=self.cwd)

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture(scope="module")
def systems(tmp_path_factory: pytest.TempPathFactory) -> Systems:
    cwd = tmp_path_factory.mktemp("listing")
    demo = derbridge("--data-dir", "V", "demo", "--customers", "200", "--seed", "5", cwd=cwd)
    assert demo.returncode == 0, demo.stderr[-3000:]
    return Systems(cwd)


def _next_command(stderr: str) -> list[str] | None:
    """The next page's command the listing printed on stderr, without the leading ``derbridge``."""
    lines = [line for line in stderr.splitlines() if line.startswith("more: derbridge ")]
    return shlex.split(lines[-1].removeprefix("more: derbridge ")) if lines else None


def test_enrollments_list_filters_by_state_program_head_end_and_account(systems: Systems) -> None:
    rejected = systems.json("enrollments", "list", "--state", "REJECTED", "--limit", "1000")["items"]
    assert rejected
    assert {e["state"] for e in rejected} == {"REJECTED"}

    filters = ["--state", "ACTIVE", "--program", "SUMMER-BYOT", "--head-end", "ECOBEE"]
    active = systems.json("enrollments", "list", *filters, "--limit", "1000")["items"]
    assert active
    assert {(e["state"], e["program_code"], e["head_end_system"]) for e in active} == {
        ("ACTIVE", "SUMMER-BYOT", "ECOBEE")
    }

    account = active[0]["cis_account_id"]
    mine = systems.json("enrollments", "list", "--account", account)["items"]
    assert active[0]["enrollment_id"] in {e["enrollment_id"] for e in mine}
    assert {e["cis_account_id"] for e in mine} == {account}

    nobody = systems.json("enrollments", "list", "--head-end", "NO-SUCH-HEAD-END")
    assert nobody == {"items": [], "next_after": None}


def test_enrollments_list_pages_by_key_and_prints_the_next_pages_command(systems: Systems) -> None:
    everything = systems.json("enrollments", "list", "--limit", "1000")["items"]
    first = systems.run("enrollments", "list", "--state", "ACTIVE", "--limit", "2")
    assert first.returncode == 0, first.stderr
    command = _next_command(first.stderr)
    assert command == ["enrollments", "list", "--state", "ACTIVE", "--limit", "2", "--after", command[-1]]

    pages: list[list[str]] = []
    page = systems.json(*command[:-2])  # the first page again, as JSON
    pages.append([e["enrollment_id"] for e in page["items"]])
    second = systems.json(*command[:-2], "--after", page["next_after"])
    pages.append([e["enrollment_id"] for e in second["items"]])
    assert page["next_after"] == command[-1] == pages[0][-1]
    assert len(pages[0]) == len(pages[1]) == 2
    ids = pages[0] + pages[1]
    assert ids == sorted(ids)
    active = [e["enrollment_id"] for e in everything if e["state"] == "ACTIVE"]
    assert ids == active[:4]

    last = systems.run("enrollments", "list", "--limit", "1000")
    assert last.returncode == 0, last.stderr
    assert _next_command(last.stderr) is None
    assert everything[0]["enrollment_id"] in last.stdout  # the table shows whole ids


def test_enrollments_list_json_has_the_apis_fields(systems: Systems) -> None:
    page = systems.json("enrollments", "list", "--limit", "3")
    assert set(page) == {"items", "next_after"}
    assert len(page["items"]) == 3
    for item in page["items"]:
        assert set(item) == set(hub.Enrollment.model_fields)


def test_enrollments_show_has_devices_lifecycle_sync_and_last_status_check(systems: Systems) -> None:
    enrollment_id = systems.json("enrollments", "list", "--state", "ACTIVE", "--limit", "1")["items"][0][
        "enrollment_id"
    ]

    shown = systems.json("enrollments", "show", enrollment_id)
    enrollment = shown["enrollment"]
    assert set(enrollment) == set(hub.Enrollment.model_fields)
    assert enrollment["enrollment_id"] == enrollment_id
    assert [step["to_state"] for step in enrollment["transitions"]] == ["PENDING", "DEVICE_SETUP", "ACTIVE"]
    assert len(enrollment["devices"]) == 1
    assert shown["sync"]["sync_state"] == "APPLIED"
    assert shown["sync"]["syncs"][0]["change"] == "ENROLLED"
    assert shown["last_status_check"]["enrollment_id"] == enrollment_id
    assert shown["last_status_check"]["result"] == "SUCCESS"

    text = systems.run("enrollments", "show", enrollment_id)
    assert text.returncode == 0, text.stderr
    device = enrollment["devices"][0]
    for expected in (
        enrollment_id,
        "lifecycle",
        "DEVICE_SETUP",
        "APPLIED",
        f"{device['head_end_system']}:{device['nic_id']}",
    ):
        assert expected in text.stdout


def test_a_rejected_enrollment_shows_why(systems: Systems) -> None:
    rejected = systems.json("enrollments", "list", "--state", "REJECTED", "--limit", "1")["items"][0]
    text = systems.run("enrollments", "show", rejected["enrollment_id"])
    assert text.returncode == 0, text.stderr
    assert rejected["rejections"][0]["code"] in text.stdout
    assert "not synced yet" in text.stdout


def test_devices_list_reads_asset_hub_and_filters_by_head_end_and_program(systems: Systems) -> None:
    devices = systems.json("devices", "list", "--head-end", "ECOBEE", "--limit", "1000")["items"]
    assert devices
    assert {d["head_end_system"] for d in devices} == {"ECOBEE"}
    assert set(devices[0]) == set(hub.Device.model_fields)

    enrolled = systems.json("devices", "list", "--program", "SUMMER-BYOT", "--limit", "1000")["items"]
    active = systems.json("enrollments", "list", "--program", "SUMMER-BYOT", "--state", "ACTIVE", "--limit", "1000")
    assert len(enrolled) >= len(active["items"]) > 0
    assert systems.json("devices", "list", "--program", "NO-SUCH-PROGRAM")["items"] == []

    first = systems.run("devices", "list", "--limit", "5")
    first_page = systems.json("devices", "list", "--limit", "5")
    command = _next_command(first.stderr)
    assert command is not None
    second = systems.json(*command)
    assert command[-2:] == ["--after", str(first_page["items"][-1]["device_id"])]
    assert second["items"][0]["device_id"] > first_page["items"][-1]["device_id"]


def test_devices_list_at_the_derms_by_availability_and_communication(systems: Systems) -> None:
    online = systems.json("devices", "list", "--communication", "ONLINE", "--limit", "1000")["items"]
    assert online
    assert {d["communication"]["communication_status"] for d in online} == {"ONLINE"}
    assert set(online[0]) == set(grid.Device.model_fields)

    available = systems.json(
        "devices", "list", "--program", "SUMMER-BYOT", "--availability", "AVAILABLE", "--limit", "1000"
    )["items"]  # fmt: skip
    assert available
    for device in available:
        assert {"program_code": "SUMMER-BYOT", "availability": "AVAILABLE"}.items() <= device["availability"][0].items()
    assert systems.json("devices", "list", "--availability", "UNAVAILABLE")["items"] == []

    all_at_derms = systems.json("devices", "list", "--system", "derms", "--limit", "1000")["items"]
    assert len(all_at_derms) >= len(online)


def test_devices_show_by_key_and_by_id_in_both_systems(systems: Systems) -> None:
    enrollment = systems.json("enrollments", "list", "--state", "ACTIVE", "--limit", "1")["items"][0]
    device = systems.json("enrollments", "show", enrollment["enrollment_id"])["enrollment"]["devices"][0]
    key = f"{device['head_end_system']}:{device['nic_id']}"

    by_key = systems.json("devices", "show", key)
    by_id = systems.json("devices", "show", str(device["device_id"]))
    assert by_key == by_id
    assethub, derms = by_key["assethub"], by_key["derms"]
    assert assethub["device"]["device_id"] == device["device_id"]
    assert [e["enrollment_id"] for e in assethub["enrollments"]] == [enrollment["enrollment_id"]]
    assert assethub["score_snapshot"] is not None
    assert [(s["program_code"], s["eligible"]) for s in assethub["scores"]] == [("SUMMER-BYOT", True)]
    assert assethub["last_status_check"]["device_id"] == device["device_id"]
    assert (derms["device"]["head_end_system"], derms["device"]["nic_id"]) == (
        device["head_end_system"],
        device["nic_id"],
    )
    assert derms["device"]["availability"][0]["availability"] == "AVAILABLE"
    assert derms["device"]["communication"]["communication_status"] in {"ONLINE", "OFFLINE", "UNKNOWN"}

    text = systems.run("devices", "show", key)
    assert text.returncode == 0, text.stderr
    for expected in (key, enrollment["enrollment_id"], "scores in the latest snapshot", "availability (DERMS)"):
        assert expected in text.stdout


def test_events_list_filters_by_status_program_and_start_window(systems: Systems) -> None:
    events = systems.json("events", "list")["items"]
    assert sorted(e["status"] for e in events) == ["CANCELLED", "COMPLETED"]
    assert set(events[0]) == set(grid.ProgramEvent.model_fields)

    completed = systems.json("events", "list", "--status", "COMPLETED")["items"]
    assert [e["status"] for e in completed] == ["COMPLETED"]
    assert systems.json("events", "list", "--program", "NO-SUCH-PROGRAM")["items"] == []
    assert len(systems.json("events", "list", "--program", "SUMMER-BYOT")["items"]) == 2

    later = max(events, key=lambda e: e["start_at"])
    since = systems.json("events", "list", "--since", later["start_at"])["items"]
    assert [e["event_id"] for e in since] == [later["event_id"]]
    until = systems.json("events", "list", "--until", later["start_at"])["items"]
    assert later["event_id"] not in {e["event_id"] for e in until}
    assert len(until) == 1

    first = systems.run("events", "list", "--limit", "1")
    assert first.returncode == 0, first.stderr
    command = _next_command(first.stderr)
    assert command is not None
    assert command[-2] == "--after"
    rest = systems.json(*command)
    assert len(rest["items"]) == 1
    assert rest["next_after"] is None


def test_events_show_counts_reservations_and_outcomes_in_both_systems(systems: Systems) -> None:
    completed = systems.json("events", "list", "--status", "COMPLETED")["items"][0]
    shown = systems.json("events", "show", completed["event_id"])
    derms, assethub = shown["derms"], shown["assethub"]
    assert derms["event"] == completed
    assert sum(derms["counts"]["outcomes"].values()) == completed["reserved_count"]
    assert sum(derms["counts"]["reservations"].values()) == completed["reserved_count"]
    assert assethub["participations"]["by_outcome"] == derms["counts"]["outcomes"]

    text = systems.run("events", "show", completed["event_id"])
    assert text.returncode == 0, text.stderr
    outcome, count = next(iter(derms["counts"]["outcomes"].items()))
    assert f"{outcome} {count}" in text.stdout
    assert f"/derms/v1/events/{completed['event_id']}/reservations" in text.stdout


@pytest.mark.parametrize(
    ("command", "line"),
    [
        (["enrollments", "show", "E-404"], "no enrollment E-404; `derbridge enrollments list` shows them"),
        (["devices", "show", "ECOBEE:404"], "no device ECOBEE:404; `derbridge devices list` shows them"),
        (["devices", "show", "987654"], "no device 987654; `derbridge devices list` shows them"),
        (["events", "show", "EV-404"], "no event EV-404; `derbridge events list` shows them"),
    ],
)
def test_a_record_that_is_not_there_is_one_line_and_exit_status_3(
    systems: Systems, command: list[str], line: str
) -> None:
    result = systems.run(*command)
    assert result.returncode == 3
    assert result.stderr.strip() == f"error: {line}"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("command", "valid"),
    [
        (["enrollments", "list", "--state", "DONE"], "'PENDING', 'DEVICE_SETUP', 'ACTIVE'"),
        (["events", "list", "--status", "DONE"], "'SCHEDULED', 'ACTIVE', 'COMPLETED', 'CANCELLED'"),
        (["devices", "list", "--communication", "MAYBE"], "'ONLINE', 'OFFLINE', 'UNKNOWN'"),
        (["devices", "list", "--limit", "0"], "--limit"),
        (["devices", "list", "--system", "assethub", "--availability", "AVAILABLE"], "--system derms"),
        (["devices", "show", "nonsense"], "HEAD_END:NIC_ID"),
    ],
)
def test_a_bad_filter_is_refused_with_status_2_naming_the_valid_values(
    systems: Systems, command: list[str], valid: str
) -> None:
    result = systems.run(*command)
    assert result.returncode == 2
    assert valid in " ".join(re.sub("[│╭╮╰╯─]", " ", result.stderr).split())
    assert result.stdout == ""
