"""The README's "Your first hour" walkthrough, run exactly as written, so that it cannot rot.

The commands are read from README.md itself: every ``sh`` block of that section, in order, joined into one
bash script and run with ``set -euo pipefail`` in an empty directory (its ``.venv`` a link to this one), so a
command that fails, or a wait that never comes true, fails the test. Two things differ from a person's run,
both outside the commands: the server's port (``8080`` in the text) is a free one here, and the background
processes the walkthrough starts are stopped at the end whatever happened. Then the test reads what the
commands printed, and asks the systems themselves that nothing was lost on the way.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.embedded import free_port

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Your first hour"
README_PORT = "8080"


def walkthrough_script(readme: str) -> str:
    """The section's ``sh`` blocks, in order, as one script."""
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    section = readme[start : end if end != -1 else len(readme)]
    blocks = re.findall(r"^```sh\n(.*?)^```", section, flags=re.S | re.M)
    assert blocks, f"no sh blocks under {SECTION!r}"
    return "\n".join(blocks)


def test_the_script_is_the_sections_blocks_in_order() -> None:
    text = (
        f"intro\n{SECTION}\n\nsay\n\n```sh\na 1\n```\n\nthen\n\n```sh\nb 2 \\\n  c\n```\n\n## Next\n\n```sh\nz\n```\n"
    )
    assert walkthrough_script(text) == "a 1\n\nb 2 \\\n  c\n"


def test_the_first_hour_walkthrough_runs_as_written(tmp_path: Path) -> None:
    script = walkthrough_script(README.read_text(encoding="utf-8"))
    assert README_PORT in script, "the walkthrough names the server's port; this test moves it to a free one"
    port = str(free_port())
    home = tmp_path / "home"
    home.mkdir()
    (home / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DERBRIDGE_", "VIRTUAL_ENV"))}
    env |= {"DERBRIDGE_SERVER__PORT": port, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "walkthrough.log"
    with log.open("w") as output:
        walkthrough = subprocess.Popen(
            ["bash", "-c", "set -euo pipefail\n" + script.replace(README_PORT, port)],
            cwd=home,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its background processes (the server, the aggregator) in one group
        )
        try:
            returncode = walkthrough.wait(timeout=900)
        finally:
            # Whatever happened, nothing the walkthrough started outlives the test.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(walkthrough.pid, signal.SIGTERM)
    printed = log.read_text()
    server_log = home / "var" / "first-hour" / "up.log"
    assert returncode == 0, printed[-6000:] + (server_log.read_text()[-4000:] if server_log.exists() else "")

    # What a person reads on the way: the program reached the DERMS, devices became ACTIVE, the agent's
    # status check was answered, scores were sent, the event reserved devices and its outcomes came back.
    assert "SUMMER-BYOT" in printed
    assert "the bridge is idle" in printed
    assert re.search(r"\d+ enrollments are ACTIVE", printed), printed
    assert re.search(r"check \S+: ANSWERED — SUCCESS ONLINE", printed), printed
    assert re.search(r"[\d,]+ device scores", printed), printed
    assert re.search(r"\d+ outcomes recorded for event", printed), printed

    # And the systems agree that nothing was lost, dead or parked on the way.
    stats = subprocess.run(
        [sys.executable, "-m", "derbridge", "messages", "stats", "--json"],
        cwd=home,
        env=env | {"DERBRIDGE_DATA_DIR": "var/first-hour"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    per_flow = json.loads(stats.stdout)
    for flow in ("program-sync", "enrollment-request", "device-status-check", "enrollment-sync", "event-outcome"):
        assert per_flow[flow]["delivered"] > 0, (flow, per_flow)
    assert all(counts["dead"] == 0 and counts["parked"] == 0 for counts in per_flow.values()), per_flow
