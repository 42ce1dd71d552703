"""The benchmarks keep working: a couple of cheap scenarios in quick mode, checked for the shape of what
they print. Nothing here looks at a figure — speed is what the benchmarks report, never what a test asserts.
"""

from __future__ import annotations

import json
import os
import pstats
import subprocess
import sys
from pathlib import Path

import pytest

from derbridge.bench import startup
from derbridge.bench.core import PROFILE_ENV, Baseline, Result, Stopwatch
from derbridge.bench.run import batches, plan, run_here, run_isolated, run_isolated_many, run_one

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _assert_result_shape(data: dict[str, object], scenario: str) -> None:
    assert data["scenario"] == scenario
    assert data["quick"] is True
    assert data["database"] in {"sqlite", "postgresql"}
    assert data["transport"] in {"sql", "amqp"}
    assert isinstance(data["sizes"], dict)
    assert data["sizes"]
    assert all(isinstance(v, int) and v > 0 for v in data["sizes"].values())
    for key in ("seconds", "rate", "peak_rss_mb", "ratio"):
        assert isinstance(data[key], float | int), key
        assert data[key] > 0, key
    baseline = data["baseline"]
    assert isinstance(baseline, dict)
    assert set(baseline) == {"what", "seconds", "rate"}
    assert isinstance(baseline["what"], str)
    assert baseline["what"]
    assert isinstance(data["target"], str)
    assert data["target"]


def test_the_cli_prints_one_json_object_per_scenario_and_backend(tmp_path: Path) -> None:
    # No PostgreSQL URL for the child, even in CI: its PostgreSQL run is then reported skipped, not run.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERBRIDGE_")}
    completed = subprocess.run(
        [sys.executable, "-m", "derbridge", "bench", "cis-import", "--quick", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    assert len(lines) == 2, completed.stdout  # SQLite, and PostgreSQL reported skipped (no URL here)
    skipped = json.loads(lines[1])
    assert (skipped["backend"], "DERBRIDGE_BENCH_POSTGRES_URL" in skipped["skipped"]) == ("postgres", True)
    data = json.loads(lines[0])
    _assert_result_shape(data, "cis-import")
    assert data["sizes"]["customers"] == 100_000
    assert data["child_peak_rss_mb"] >= data["peak_rss_mb"] > 0


def test_a_scenario_runs_in_its_own_process_with_its_baseline() -> None:
    data = run_isolated("bridge-throughput", "sqlite", quick=True)
    assert "error" not in data, data
    _assert_result_shape(data, "bridge-throughput")
    assert data["sizes"] == {"messages": 2_000}
    assert data["cpu_probe_ms"] > 0
    assert "raw queue table" in data["baseline"]["what"]


def test_an_unknown_scenario_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="f4-score-transfer"):
        plan(["f9-teleport"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("DERBRIDGE_") or k.startswith("DERBRIDGE_TEST_")}
    completed = subprocess.run(
        [sys.executable, "-m", "derbridge", "bench", "f9-teleport", "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 2
    assert "unknown scenario" in completed.stderr
    assert completed.stdout == ""


def test_every_backend_quality_md_names_is_planned() -> None:
    planned = plan(None)
    assert ("f4-score-transfer", "postgres") in planned
    assert ("bridge-throughput", "postgres") in planned
    assert ("bridge-throughput", "amqp") in planned
    assert len(set(planned)) == len(planned)


def test_the_scenarios_of_one_world_share_one_process_per_backend() -> None:
    season = ("f4-score-transfer", "f5-reservation", "f7-outcomes")
    runs = batches(plan(None))
    assert runs[:2] == [(season, "sqlite"), (season, "postgres")]
    cli = [(names, backend) for names, backend in runs if names[0].startswith("cli-")]
    assert cli == [(("cli-version", "cli-read-only"), "sqlite"), (("cli-read-only",), "postgres")]
    assert all(len(names) == 1 for names, backend in runs[2:] if (names, backend) not in cli)
    assert sorted((name, backend) for names, backend in runs for name in names) == sorted(plan(None))
    # Asked in another order, a world still runs once per backend, where its first scenario stands.
    assert batches(plan(["cis-import", "f7-outcomes", "f5-reservation"]))[2:] == [
        (("f7-outcomes", "f5-reservation"), "sqlite"),
        (("f7-outcomes", "f5-reservation"), "postgres"),
    ]


def test_only_scenarios_of_one_world_share_a_process() -> None:
    with pytest.raises(ValueError, match="one world"):
        run_here(["f4-score-transfer", "cis-import"], "sqlite", quick=True)


def test_a_backend_without_its_server_is_reported_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DERBRIDGE_BENCH_POSTGRES_URL", "DERBRIDGE_TEST_POSTGRES_URL"):
        monkeypatch.delenv(name, raising=False)
    data = run_one("f4-score-transfer", "postgres", quick=True)
    assert data["scenario"] == "f4-score-transfer"
    assert "DERBRIDGE_BENCH_POSTGRES_URL" in data["skipped"]


def test_the_ratio_is_the_baselines_time_over_ours() -> None:
    result = Result(
        scenario="x",
        database="sqlite",
        transport="sql",
        sizes={"rows": 10},
        seconds=4.0,
        rate=2.5,
        unit="rows",
        target="none",
        baseline=Baseline(what="bare", seconds=1.0, rate=10.0),
    )
    assert result.as_json()["ratio"] == 0.25
    result.baseline = None
    assert result.as_json()["ratio"] is None


def test_a_profiled_clock_writes_one_profile_per_phase(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROFILE_ENV, str(tmp_path / "profiles"))
    with Stopwatch(profile_as="f7-outcomes-sqlite-sql") as watch:
        sum(range(1000))
        watch.lap("reported")
        sum(range(1000))
        watch.lap("closed and recorded")
    written = sorted(p.name for p in (tmp_path / "profiles").iterdir())
    assert written == [
        "f7-outcomes-sqlite-sql.closed-and-recorded.pstats",
        "f7-outcomes-sqlite-sql.reported.pstats",
        "f7-outcomes-sqlite-sql.rest.pstats",
    ]
    assert pstats.Stats(str(tmp_path / "profiles" / written[1])).total_calls > 0  # type: ignore[attr-defined]
    assert set(watch.laps) == {"reported", "closed and recorded"}


def test_a_clock_without_the_setting_writes_no_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with Stopwatch(profile_as="f4-score-transfer-sqlite-sql") as watch:
        watch.lap("only")
    assert list(tmp_path.iterdir()) == []


def test_the_cli_start_up_is_timed_against_the_bare_interpreter_in_fresh_processes() -> None:
    results = run_isolated_many(["cli-version", "cli-read-only"], "sqlite", quick=True)
    assert [r.get("error") for r in results] == [None, None], results
    commands = {"cli-version": "derbridge --version", "cli-read-only": "derbridge messages stats --json"}
    for data, (scenario, command) in zip(results, commands.items(), strict=True):
        _assert_result_shape(data, scenario)
        assert data["sizes"] == {"runs": startup.QUICK_RUNS}
        assert data["unit"] == "starts"
        assert data["details"]["command"] == command
        assert "python -c pass" in data["baseline"]["what"]
        assert data["details"]["median_seconds"] == pytest.approx(data["seconds"], abs=1e-3)
        assert data["details"]["min_seconds"] <= data["seconds"] <= data["details"]["max_seconds"]


def test_a_start_that_fails_is_an_error_not_a_figure(tmp_path: Path) -> None:
    env = dict(os.environ)
    with pytest.raises(startup.StartupFailure, match="exit status 3: broken"):
        startup.run_starts(
            [
                [sys.executable, "-c", "pass"],
                [sys.executable, "-c", "import sys; print('broken', file=sys.stderr); sys.exit(3)"],
            ],
            1,
            env,
            tmp_path,
        )
    with pytest.raises(startup.StartupFailure, match="--version printed"):
        startup.COMMANDS["cli-version"][1]("derbridge 0.0.0-other\n")
