"""``derbridge sim aggregator``: one simulated aggregator as an OpenADR VEN against a running VTN
(``derbridge up``), on the wall clock. See :mod:`derbridge.sim.ven` for what it does."""

from __future__ import annotations

import json
import queue
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from derbridge.cli.common import ExitCode, err, fail

sim_app = typer.Typer(help="Simulators that drive a running derbridge from outside.", no_args_is_help=True)


def _over(event: dict[str, Any], now: datetime) -> bool:
    from derbridge.edge import domain

    period = event.get("intervalPeriod") or {}
    if not period.get("start"):
        return False
    start = datetime.fromisoformat(str(period["start"]).replace("Z", "+00:00"))
    return start + domain.parse_duration(str(period.get("duration") or "PT0S")) <= now


@sim_app.command("aggregator")
def aggregator(
    vtn: Annotated[
        str, typer.Option(help="The server's base URL, e.g. http://127.0.0.1:8080 (the VTN is under /openadr3/3.1.0).")
    ],
    inventory: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="aggregators/<HEAD_END>.csv.")],
    client_id: Annotated[
        str | None, typer.Option(help="The edge client's id (derbridge edge client add), or give --credentials.")
    ] = None,
    client_secret: Annotated[
        str | None, typer.Option(help="The edge client's secret.", envvar="DERBRIDGE_SIM_SECRET")
    ] = None,
    credentials: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="The file `derbridge edge client add --json` wrote: the client's id and secret, instead of "
            "--client-id and --client-secret.",
        ),
    ] = None,
    callback_url: Annotated[
        str | None,
        typer.Option(help="Subscribe to webhooks at this URL (it must reach --listen); without it, poll only."),
    ] = None,
    listen: Annotated[str, typer.Option(help="HOST:PORT of the webhook receiver.")] = "127.0.0.1:8765",
    hook_token: Annotated[str | None, typer.Option(help="Bearer token the VTN must send with webhooks.")] = None,
    poll_seconds: Annotated[float, typer.Option(min=0.1, help="Seconds between polls for events.")] = 30.0,
    heartbeat_seconds: Annotated[float, typer.Option(min=1, help="Seconds between heartbeats.")] = 300.0,
    seed: Annotated[int, typer.Option(help="Random seed of the devices' behaviour.")] = 42,
    once: Annotated[bool, typer.Option("--once", help="Onboard, heartbeat, report what is due, and stop.")] = False,
) -> None:
    """Run one simulated aggregator: token, VEN, bulk onboarding of the inventory, heartbeats, events by
    polling (and webhook), outcome reports after each event ends. Ctrl-C stops it."""
    from http.server import ThreadingHTTPServer

    import httpx

    from derbridge.sim.aggregator import load_aggregator
    from derbridge.sim.hooks import WebhookReceiver
    from derbridge.sim.ven import SimulatedVen, VenFailure, VtnRefusedCredentials, VtnUnreachable

    if not listen.rpartition(":")[2].isdigit():
        fail(f"--listen must be HOST:PORT, e.g. 127.0.0.1:8765 (not {listen!r})", ExitCode.USAGE)
    client_id, client_secret = _client(client_id, client_secret, credentials)
    ven = SimulatedVen(vtn, client_id, client_secret, load_aggregator(inventory), random.Random(seed))
    inbox: queue.Queue[dict[str, Any]] = queue.Queue()
    server: ThreadingHTTPServer | None = None
    try:
        ven.connect()
        onboarded = ven.onboard()
        err.print(f"{ven.ven_name}: VEN {ven.ven_id}, {onboarded:,} resources onboarded")
        if callback_url is not None and not once:
            host, _, port = listen.rpartition(":")
            handler = type("Hooks", (WebhookReceiver,), {"inbox": inbox, "token": hook_token})
            try:
                server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), handler)
            except OSError as error:
                fail(f"cannot listen on {listen} ({error.strerror}): pass another --listen", ExitCode.UNREACHABLE)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            err.print(f"subscription {ven.subscribe(callback_url, hook_token)}: webhooks at {callback_url}")
        next_beat = 0.0
        while True:
            if time.monotonic() >= next_beat:
                beats = ven.heartbeat()
                err.print(f"heartbeat: {beats:,} devices")
                next_beat = time.monotonic() + heartbeat_seconds
            now = datetime.now(UTC)
            for event in ven.program_events():
                if event["id"] not in ven.reported_events and _over(event, now):
                    err.print(f"event {event['id']}: {ven.report_outcomes(event):,} outcomes reported")
            if once:
                statuses = ven.enrollment_statuses()
                typer.echo(json.dumps({"ven_id": ven.ven_id, "onboarded": onboarded, "enrollment": statuses}))
                return
            try:
                note = inbox.get(timeout=poll_seconds)
                err.print(f"webhook: {note.get('operation')} {note.get('objectType')}")
            except queue.Empty:
                pass
    except VtnRefusedCredentials as failure:
        fail(str(failure), ExitCode.CONFLICT)
    except VtnUnreachable as failure:
        fail(str(failure), ExitCode.UNREACHABLE)
    except httpx.TransportError:
        fail(f"lost the VTN at {vtn}: is derbridge up still running?", ExitCode.UNREACHABLE)
    except VenFailure as failure:
        fail(str(failure), ExitCode.FAILED)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.shutdown()
        ven.close()


def _client(client_id: str | None, client_secret: str | None, credentials: Path | None) -> tuple[str, str]:
    """The client's id and secret: from the options, or from the JSON file ``edge client add --json`` wrote
    (so a secret need not be typed, nor appear in the process list)."""
    if credentials is not None:
        try:
            made = json.loads(credentials.read_text(encoding="utf-8"))
            return str(made["client_id"]), str(made["client_secret"])
        except (ValueError, KeyError, TypeError):
            fail(
                f"--credentials {credentials} is not what `derbridge edge client add --json` writes "
                '({"client_id": …, "client_secret": …})',
                ExitCode.USAGE,
            )
    if client_id is None or client_secret is None:
        fail("give --credentials FILE, or both --client-id and --client-secret", ExitCode.USAGE)
    return client_id, client_secret
