"""The synthetic utility generator: reproducibility, the CIS extract, the inventories and their planted defects."""

from __future__ import annotations

import csv
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from derbridge.assethub.domain.enrollment import DeviceRef
from derbridge.assethub.domain.enrollment_validation import (
    AccountFacts,
    ActiveEnrollment,
    EnrollmentFacts,
    EnrollmentRequest,
    EnrollmentRequestDevice,
    validate_enrollment_request,
)
from derbridge.assethub.domain.program import DeviceType, Program, ProgramRules, ProgramStatus
from derbridge.cis.extract import CIS_COLUMNS, AccountStatus, CisRecord, parse_row
from derbridge.sim import names
from derbridge.sim.generator import (
    ACCEPTED,
    DEVICES_PER_PREMISE_SHARES,
    ENROLLMENT_CLOSES,
    ENROLLMENT_OPENS,
    HEAD_END_SHARES,
    HEAD_ENDS,
    INVENTORY_COLUMNS,
    REJECTION_REASONS,
    UNKNOWN_PROGRAM_CODE,
    GenerationReport,
    generate_utility,
)

CUSTOMERS = 20_000
PROGRAM_CODE = "SUMMER-BYOT"
REQUEST_COLUMNS = INVENTORY_COLUMNS[: INVENTORY_COLUMNS.index("asset_ownership") + 1]
"""Columns that belong to the request, not to one of its devices: equal on every row of a request."""


@dataclass(frozen=True)
class Utility:
    report: GenerationReport
    out_dir: Path
    cis: list[CisRecord]
    rows: dict[str, list[dict[str, str]]]
    """Inventory rows per head end, in file order."""

    def requests(self, head_end: str) -> list[list[dict[str, str]]]:
        """The head end's requests in file order, each as its list of device rows."""
        grouped: list[list[dict[str, str]]] = []
        for row in self.rows[head_end]:
            if grouped and grouped[-1][0]["request_id"] == row["request_id"]:
                grouped[-1].append(row)
            else:
                grouped.append([row])
        return grouped

    def all_requests(self) -> list[list[dict[str, str]]]:
        return [request for head_end in HEAD_ENDS for request in self.requests(head_end)]


def read_cis(path: Path) -> list[CisRecord]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        assert next(reader) == list(CIS_COLUMNS)
        records = []
        for line, fields in enumerate(reader, start=2):
            parsed = parse_row(line, fields)
            assert isinstance(parsed, CisRecord), parsed
            records.append(parsed)
    return records


def read_inventory(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == INVENTORY_COLUMNS
        return list(reader)


@pytest.fixture(scope="module")
def utility(tmp_path_factory: pytest.TempPathFactory) -> Utility:
    out_dir = tmp_path_factory.mktemp("utility")
    report = generate_utility(CUSTOMERS, 7, out_dir, program_code=PROGRAM_CODE)
    return Utility(
        report=report,
        out_dir=out_dir,
        cis=read_cis(report.cis_extract),
        rows={head_end: read_inventory(path) for head_end, path in report.inventories.items()},
    )


def file_bytes(out_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out_dir)): p.read_bytes() for p in sorted(out_dir.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        generate_utility(1_500, seed, tmp_path / name)
    first, again, other = (file_bytes(tmp_path / name) for name in "abc")
    assert set(first) == {"cis_extract.csv", *(f"aggregators/{h}.csv" for h in HEAD_ENDS)}
    assert first == again
    assert set(other) == set(first)
    assert all(other[name] != first[name] for name in first)


def test_program_code_changes_only_the_program_column(tmp_path: Path) -> None:
    generate_utility(500, 3, tmp_path / "a")
    generate_utility(500, 3, tmp_path / "b", program_code="WINTER-27")
    a, b = file_bytes(tmp_path / "a"), file_bytes(tmp_path / "b")
    assert a["cis_extract.csv"] == b["cis_extract.csv"]
    assert a["aggregators/ECOBEE.csv"].replace(b",SUMMER-BYOT,", b",WINTER-27,") == b["aggregators/ECOBEE.csv"]


def test_files_are_plain_utf8_csv_with_the_documented_headers(utility: Utility) -> None:
    raw = utility.report.cis_extract.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    assert raw.split(b"\n", 1)[0] == ",".join(CIS_COLUMNS).encode()
    assert raw.endswith(b"\n")
    assert b'"' not in raw
    assert b"\r" not in raw
    for path in utility.report.inventories.values():
        head = path.read_bytes().split(b"\n", 1)[0]
        assert head == ",".join(INVENTORY_COLUMNS).encode()


def test_cis_extract_people_accounts_and_statuses(utility: Utility) -> None:
    cis = utility.cis
    assert len(cis) == utility.report.cis_rows
    for column in ("cis_account_id", "cis_premise_id", "cis_service_point_id"):
        values = [getattr(r, column) for r in cis]
        assert len(set(values)) == len(values), column
    assert all(re.fullmatch(r"P\d{7}", r.cis_person_id) for r in cis)
    assert all(re.fullmatch(r"A\d{7}", r.cis_account_id) for r in cis)
    assert all(re.fullmatch(r"PR\d{7}", r.cis_premise_id) for r in cis)
    assert all(re.fullmatch(r"SP\d{7}", r.cis_service_point_id) for r in cis)

    accounts_by_person: dict[str, list[CisRecord]] = defaultdict(list)
    for r in cis:
        accounts_by_person[r.cis_person_id].append(r)
    customers = [p for p, rs in accounts_by_person.items() if rs[0].account_status is AccountStatus.ACTIVE]
    cis_only = [p for p, rs in accounts_by_person.items() if rs[0].account_status is not AccountStatus.ACTIVE]
    assert len(customers) == CUSTOMERS
    # Every person's accounts share one status: customers are all ACTIVE, CIS-only people never are.
    assert all(len({r.account_status for r in rs}) == 1 for rs in accounts_by_person.values())
    assert len(cis_only) == pytest.approx(0.02 * CUSTOMERS, rel=0.05)
    assert all(len(accounts_by_person[p]) == 1 for p in cis_only)
    statuses = Counter(accounts_by_person[p][0].account_status for p in cis_only)
    assert set(statuses) == {AccountStatus.CLOSED, AccountStatus.SUSPENDED, AccountStatus.PENDING_START}
    assert statuses[AccountStatus.CLOSED] > statuses[AccountStatus.SUSPENDED]
    second_homes = sum(len(accounts_by_person[p]) == 2 for p in customers)
    assert second_homes / CUSTOMERS == pytest.approx(0.05, abs=0.01)
    assert max(len(rs) for rs in accounts_by_person.values()) <= 2


def test_cis_extract_fields_look_real(utility: Utility) -> None:
    cis = utility.cis
    n = len(cis)
    zones_by_state: dict[str, set[str]] = defaultdict(set)
    for r in cis:
        zones_by_state[r.state].add(r.time_zone)
        assert r.country == "US"
        assert re.fullmatch(r"[A-Z][a-z]+ [A-Z][A-Za-z]+", r.name)
        assert re.fullmatch(r"\d{1,4} [A-Za-z ]+ [A-Z][a-z]+", r.address1)
        assert r.address2 is None or re.fullmatch(r"Apt \d+", r.address2)
        assert re.fullmatch(r"\d{5}", r.postal)
        assert r.division in names.DIVISIONS
        assert r.latitude is not None
        assert r.longitude is not None
        assert 24.0 < r.latitude < 49.5
        assert -125.0 < r.longitude < -66.0
        for phone in (r.home_phone, r.business_phone):
            assert phone is None or re.fullmatch(r"\d{3}-555-\d{4}", phone)
        assert r.email is None or (r.email == r.email.lower() and re.fullmatch(r"[a-z0-9._]+@[a-z.]+", r.email))
    assert all(len(zones) == 1 for zones in zones_by_state.values()), zones_by_state
    assert {z for zones in zones_by_state.values() for z in zones} == {
        "America/Chicago",
        "America/New_York",
        "America/Denver",
        "America/Los_Angeles",
    }
    assert sum(r.email is not None for r in cis) / n == pytest.approx(0.85, abs=0.02)
    assert sum(r.home_phone is not None for r in cis) / n == pytest.approx(0.90, abs=0.02)
    assert sum(r.business_phone is not None for r in cis) / n == pytest.approx(0.20, abs=0.02)
    assert 0.03 < sum(r.address2 is not None for r in cis) / n < 0.15
    emails = {r.cis_person_id: r.email for r in cis if r.email is not None}
    assert len(set(emails.values())) / len(emails) > 0.97
    with utility.report.cis_extract.open(newline="", encoding="utf-8") as f:
        coordinates = [row[-2:] for row in csv.reader(f)][1:]
    assert all(re.fullmatch(r"-?\d+\.\d{5}", value) for pair in coordinates for value in pair)


def test_word_lists_hold_no_csv_structural_characters() -> None:
    words = [
        *names.FIRST_NAMES,
        *names.LAST_NAMES,
        *names.STREET_NAMES,
        *names.STREET_SUFFIXES,
        *names.EMAIL_DOMAINS,
        *(field for city in names.CITIES for field in city if isinstance(field, str)),
    ]
    assert not [w for w in words if re.search(r"[,\"\r\n]", w) or w != w.strip() or not w]
    assert len(names.EMAIL_DOMAINS) == len(names.EMAIL_DOMAIN_WEIGHTS)


def test_rows_of_a_request_are_contiguous_and_share_the_request(utility: Utility) -> None:
    for head_end in HEAD_ENDS:
        requests = utility.requests(head_end)
        ids = [r[0]["request_id"] for r in requests]
        assert len(set(ids)) == len(ids), "a request's rows are not contiguous, or ids repeat"
        assert ids == [f"{head_end}-R{i:07d}" for i in range(1, len(ids) + 1)]
        stamps = [r[0]["requested_at"] for r in requests]
        assert stamps == sorted(stamps)
        for request in requests:
            assert [int(row["device_sequence"]) for row in request] == list(range(1, len(request) + 1))
            assert all(row[c] == request[0][c] for row in request for c in REQUEST_COLUMNS)
            assert {row["head_end_system"] for row in request} == {head_end}
            assert {row["expected_result"] for row in request} == {request[0]["expected_result"]}


def test_inventory_fields(utility: Utility) -> None:
    opens, closes = ENROLLMENT_OPENS, ENROLLMENT_CLOSES
    rows = [row for head_end in HEAD_ENDS for row in utility.rows[head_end]]
    for row in rows:
        at = datetime.strptime(row["requested_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert opens <= at < closes
        if row["start_date"] != "2027-13-45":
            assert row["start_date"] == row["requested_at"][:10]
        assert row["installation_method"] in {"CUSTOMER_INSTALLED", "PROFESSIONAL_INSTALLED"}
        assert row["asset_ownership"] == "CUSTOMER_OWNED"
        assert row["serial_no"]
        assert row["nic_id"]
        assert row["manufacturer"]
        assert row["model"]
        assert row["badge_no"] == "" or re.fullmatch(r"\d{8}", row["badge_no"])
        assert re.fullmatch(r"0\.\d{4}|1\.0000", row["propensity"])
        assert row["offline"] in {"true", "false"}
        assert row["cis_service_agreement_id"] == "SA" + row["cis_account_id"][1:]
    propensities = [float(row["propensity"]) for row in rows]
    assert sum(propensities) / len(propensities) == pytest.approx(0.8, abs=0.01)
    assert sum(row["offline"] == "true" for row in rows) / len(rows) == pytest.approx(0.05, abs=0.01)
    manufacturers = {
        h: {row["manufacturer"] for row in utility.rows[h] if row["device_type"] == "THERMOSTAT"} for h in HEAD_ENDS
    }
    assert manufacturers == {
        "ECOBEE": {"ecobee"},
        "NEST": {"Google"},
        "HONEYWELL": {"Honeywell"},
        "SENSI": {"Emerson"},
    }
    # nic_id is unique per head end except on the planted re-sends of an already enrolled device.
    for head_end in HEAD_ENDS:
        nics = [r["nic_id"] for r in utility.rows[head_end] if r["expected_result"] != "DEVICE_ALREADY_ENROLLED"]
        assert len(set(nics)) == len(nics)
    serials = [r["serial_no"] for r in rows if r["expected_result"] != "DEVICE_ALREADY_ENROLLED"]
    assert len(set(serials)) == len(serials)


def test_head_end_and_devices_per_premise_shares(utility: Utility) -> None:
    accepted = [r for r in utility.all_requests() if r[0]["expected_result"] == ACCEPTED]
    assert len(accepted) == CUSTOMERS
    premises = [r[0]["cis_premise_id"] for r in accepted]
    assert len(set(premises)) == len(premises)
    by_head_end = Counter(r[0]["head_end_system"] for r in accepted)
    for head_end, share in zip(HEAD_ENDS, HEAD_END_SHARES, strict=True):
        assert by_head_end[head_end] / CUSTOMERS == pytest.approx(share, abs=0.015), head_end
    sizes = Counter(len(r) for r in accepted)
    assert set(sizes) == {1, 2, 3}
    for k, share in zip((1, 2, 3), DEVICES_PER_PREMISE_SHARES, strict=True):
        assert sizes[k] / CUSTOMERS == pytest.approx(share, abs=0.012), k


def test_rejected_share_and_every_reason_present(utility: Utility) -> None:
    requests = utility.all_requests()
    results = Counter(r[0]["expected_result"] for r in requests)
    rejected = len(requests) - results[ACCEPTED]
    assert 0.02 <= rejected / len(requests) <= 0.04
    assert set(results) == {ACCEPTED, *REJECTION_REASONS}


def test_accepted_requests_match_the_cis_extract(utility: Utility) -> None:
    by_account = {r.cis_account_id: r for r in utility.cis}
    for request in utility.all_requests():
        row = request[0]
        if row["expected_result"] != ACCEPTED:
            continue
        account = by_account[row["cis_account_id"]]
        assert account.account_status is AccountStatus.ACTIVE
        assert row["program_code"] == PROGRAM_CODE
        for column in (
            "cis_person_id",
            "cis_premise_id",
            "cis_service_point_id",
            "division",
            "time_zone",
            "address1",
            "city",
            "county",
            "state",
            "postal",
            "country",
        ):
            assert row[column] == getattr(account, column), column
        for column in ("name", "email", "home_phone", "business_phone", "address2"):
            assert row[column] == (getattr(account, column) or ""), column
        assert all(r["device_type"] == DeviceType.THERMOSTAT.value for r in request)
        date.fromisoformat(row["start_date"])


def test_each_rejection_has_the_defect_its_code_names(utility: Utility) -> None:
    by_account = {r.cis_account_id: r for r in utility.cis}
    premise_owner = {r.cis_premise_id: r.cis_account_id for r in utility.cis}
    seen = Counter[str]()
    for head_end in HEAD_ENDS:
        accepted_devices: dict[str, dict[str, str]] = {}
        for request in utility.requests(head_end):
            row = request[0]
            code = row["expected_result"]
            seen[code] += 1
            account = by_account.get(row["cis_account_id"])
            if code == ACCEPTED:
                accepted_devices.update({r["nic_id"]: r for r in request})
            elif code == "UNKNOWN_ACCOUNT":
                assert account is None
            elif code == "ACCOUNT_NOT_ACTIVE":
                assert account is not None
                assert account.account_status is not AccountStatus.ACTIVE
                assert (row["cis_premise_id"], row["cis_service_point_id"]) == (
                    account.cis_premise_id,
                    account.cis_service_point_id,
                )
            elif code == "PREMISE_NOT_ON_ACCOUNT":
                assert account is not None
                assert account.account_status is AccountStatus.ACTIVE
                assert premise_owner[row["cis_premise_id"]] != row["cis_account_id"]
            elif code == "UNKNOWN_PROGRAM":
                assert row["program_code"] == UNKNOWN_PROGRAM_CODE != PROGRAM_CODE
            elif code == "DEVICE_TYPE_NOT_ELIGIBLE":
                assert {r["device_type"] for r in request} == {DeviceType.WATER_HEATER.value}
            elif code == "DEVICE_ALREADY_ENROLLED":
                assert len(request) == 1
                original = accepted_devices[row["nic_id"]]
                assert original["request_id"] != row["request_id"]
                assert original["program_code"] == row["program_code"] == PROGRAM_CODE
                assert original["serial_no"] == row["serial_no"]
                assert original["cis_account_id"] == row["cis_account_id"]
            else:
                assert code == "INVALID_REQUEST"
                assert row["cis_service_point_id"] == "" or row["start_date"] == "2027-13-45"
    assert set(seen) == {ACCEPTED, *REJECTION_REASONS}


def test_asset_hub_validation_answers_the_expected_result(utility: Utility) -> None:
    """Run every request through Asset Hub's own validator, in file order: each must draw exactly the
    reason code it was built for, and nothing else."""
    now = datetime(2027, 4, 1, tzinfo=UTC)
    program = Program(
        program_code=PROGRAM_CODE,
        name="Summer BYOT",
        status=ProgramStatus.ACTIVE,
        enrollment_opens_at=ENROLLMENT_OPENS,
        enrollment_closes_at=ENROLLMENT_CLOSES,
        eligible_device_types=frozenset({DeviceType.THERMOSTAT}),
        excluded_program_codes=frozenset(),
        rules=ProgramRules(),
    )
    accounts: dict[str, AccountFacts] = {}
    for r in utility.cis:
        accounts[r.cis_account_id] = AccountFacts(
            cis_account_id=r.cis_account_id,
            cis_person_id=r.cis_person_id,
            status=r.account_status,
            premise_ids=frozenset({r.cis_premise_id}),
            service_point_ids=frozenset({(r.cis_premise_id, r.cis_service_point_id)}),
        )
    enrolled: dict[DeviceRef, tuple[ActiveEnrollment, ...]] = {}
    for head_end in HEAD_ENDS:
        for request in utility.requests(head_end):
            row = request[0]
            try:
                start: date | None = date.fromisoformat(row["start_date"])
                unparseable: set[str] = set()
            except ValueError:
                # The message contract turns an unparseable date into INVALID_REQUEST on that field.
                start, unparseable = None, {"INVALID_REQUEST"}
            devices = tuple(
                EnrollmentRequestDevice(
                    sequence=int(r["device_sequence"]),
                    device_type=r["device_type"],
                    manufacturer=r["manufacturer"],
                    model=r["model"],
                    serial_no=r["serial_no"],
                    nic_id=r["nic_id"],
                    head_end_system=r["head_end_system"],
                    badge_no=r["badge_no"] or None,
                )
                for r in request
            )
            enrollment_request = EnrollmentRequest(
                head_end_system=head_end,
                request_id=row["request_id"],
                requested_at=datetime.strptime(row["requested_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC),
                cis_person_id=row["cis_person_id"],
                cis_account_id=row["cis_account_id"],
                program_code=row["program_code"],
                cis_premise_id=row["cis_premise_id"],
                cis_service_point_id=row["cis_service_point_id"],
                start_date=start,
                end_date=None,
                devices=devices,
                installation_method=row["installation_method"],
                asset_ownership=row["asset_ownership"],
            )
            facts = EnrollmentFacts(
                account=accounts.get(row["cis_account_id"]),
                program=program if row["program_code"] == PROGRAM_CODE else None,
                active_enrollments_of_devices={
                    d.device_ref: enrolled[d.device_ref] for d in devices if d.device_ref in enrolled
                },
                programs_by_code={PROGRAM_CODE: program},
            )
            codes = {r.code.value for r in validate_enrollment_request(enrollment_request, facts, now)}
            codes |= unparseable
            expected = set() if row["expected_result"] == ACCEPTED else {row["expected_result"]}
            assert codes == expected, (row["request_id"], codes)
            if not codes:
                for d in devices:
                    enrolled[d.device_ref] = (ActiveEnrollment(row["request_id"], PROGRAM_CODE, d.device_ref),)


def test_report_counts_match_the_files(utility: Utility) -> None:
    report = utility.report
    requests = utility.all_requests()
    results = Counter(r[0]["expected_result"] for r in requests)
    assert report.customers == CUSTOMERS
    assert report.cis_rows == len(utility.cis)
    assert report.devices == sum(len(rows) for rows in utility.rows.values())
    assert report.devices_by_head_end == {h: len(utility.rows[h]) for h in HEAD_ENDS}
    assert report.requests == len(requests)
    assert report.rejected_requests == len(requests) - results[ACCEPTED]
    assert report.rejections_by_reason == {code: results[code] for code in REJECTION_REASONS}
    assert report.cis_extract == utility.out_dir / "cis_extract.csv"
    assert report.inventories == {h: utility.out_dir / "aggregators" / f"{h}.csv" for h in HEAD_ENDS}
    assert report.seconds > 0
    assert not list(utility.out_dir.rglob("*.partial"))


def test_a_tiny_utility_still_plants_every_reason(tmp_path: Path) -> None:
    report = generate_utility(1, 5, tmp_path)
    assert report.customers == 1
    assert set(report.rejections_by_reason) == set(REJECTION_REASONS)
    assert all(count >= 1 for count in report.rejections_by_reason.values())
    read_cis(report.cis_extract)
    results = Counter(row["expected_result"] for path in report.inventories.values() for row in read_inventory(path))
    assert results[ACCEPTED] >= 1
    assert set(results) == {ACCEPTED, *REJECTION_REASONS}


def test_progress_is_reported_to_completion(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    report = generate_utility(300, 1, tmp_path, progress=lambda s, d, t: calls.append((s, d, t)))
    last = {stage: (done, total) for stage, done, total in calls}
    assert last == {
        "model": (1, 1),
        "cis_extract": (report.cis_rows, report.cis_rows),
        "inventories": (report.devices, report.devices),
    }
    for stage in last:
        done = [d for s, d, _ in calls if s == stage]
        assert done == sorted(done)
        assert done[0] == 0


@pytest.mark.parametrize("customers", [0, -3])
def test_customers_below_one_is_refused(tmp_path: Path, customers: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        generate_utility(customers, 1, tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("program_code", ["", "has space", UNKNOWN_PROGRAM_CODE])
def test_unusable_program_code_is_refused(tmp_path: Path, program_code: str) -> None:
    with pytest.raises(ValueError, match="program_code"):
        generate_utility(10, 1, tmp_path, program_code=program_code)
