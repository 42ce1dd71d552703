"""``derbridge assethub``: an agent's device status check, unenrollment and device replacement."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from derbridge.cli.common import (
    DeviceTypeChoice,
    ExitCode,
    fail,
    fail_validation,
    out,
    print_json,
    system_call,
    working,
)

if TYPE_CHECKING:
    from derbridge.runtime import Runtime

assethub_app = typer.Typer(help="Asset Hub: enrollments and device status checks.", no_args_is_help=True)


@assethub_app.command("status-check")
def assethub_status_check(
    head_end_system: Annotated[str, typer.Argument(help="e.g. ECOBEE")],
    nic_id: Annotated[str, typer.Argument(help="The device's id at its head end.")],
    requested_by: Annotated[str, typer.Option(help="Who asks (kept with the check).")] = "cli",
    wait: Annotated[float, typer.Option(min=0, help="Seconds to wait for the DERMS's answer.")] = 15.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the check as JSON.")] = False,
) -> None:
    """Ask the DERMS for a device's latest communication status and wait for the answer.

    The bridge must be running (`derbridge up`) to carry the question and the answer."""
    from derbridge.usecases.status_checks import run_status_check

    async def work(runtime: Runtime) -> Any:
        return await run_status_check(runtime, head_end_system, nic_id, requested_by=requested_by, timeout_seconds=wait)

    with working(f"asking the DERMS about {head_end_system}:{nic_id} (up to {wait:.0f} s)"):
        check = system_call(work)
    if as_json:
        print_json(check)
    if check["status"] == "OPEN":
        fail(
            f"check {check['check_id']} is still open after {wait:.0f} s: is the bridge running (derbridge up)?",
            ExitCode.WAITING,
        )
    if as_json:
        return
    out.print(
        f"check {check['check_id']}: {check['status']} — {check.get('result')} "
        f"{check.get('communication_status')}, last seen {check.get('last_communication_at')} "
        f"(source {check.get('source')}){' — ' + str(check['detail']) if check.get('detail') else ''}"
    )


@assethub_app.command("unenroll")
def assethub_unenroll(
    enrollment_id: Annotated[str, typer.Argument(help="The enrollment to end.")],
    reason: Annotated[str, typer.Option(help="Why, kept with the transition.")] = "unenrolled by an operator",
) -> None:
    """Unenroll an ACTIVE enrollment: its devices become unavailable in the DERMS."""
    from derbridge.assethub.services.enrollment_sync import unenroll

    async def work(runtime: Runtime) -> Any:
        return await unenroll(runtime.async_engine("assethub"), enrollment_id, reason, now=runtime.clock.now())

    change = system_call(work)
    out.print(
        f"{change.enrollment_id}: {change.state.value}; "
        f"sync {change.sync.sync_id} (sequence {change.sync.sequence}) sent"
    )


@assethub_app.command("replace-device")
def assethub_replace_device(
    enrollment_id: Annotated[str, typer.Argument(help="The enrollment whose device is replaced.")],
    old_head_end: Annotated[str, typer.Option(help="The replaced device's head-end system.")],
    old_nic_id: Annotated[str, typer.Option(help="The replaced device's id at its head end.")],
    new_head_end: Annotated[str, typer.Option(help="The new device's head-end system, e.g. ECOBEE.")],
    new_nic_id: Annotated[str, typer.Option(help="The new device's id at its head end.")],
    manufacturer: Annotated[str, typer.Option(help="The new device's manufacturer.")],
    model: Annotated[str, typer.Option(help="The new device's model.")],
    serial_no: Annotated[str, typer.Option(help="The new device's serial number.")],
    device_type: Annotated[
        DeviceTypeChoice, typer.Option(case_sensitive=False, help="The new device's kind.")
    ] = DeviceTypeChoice.THERMOSTAT,
) -> None:
    """Replace an ACTIVE enrollment's device: the DERMS sees the old device leave and the new one arrive
    at once, never one without the other."""
    from pydantic import ValidationError

    from derbridge.assethub.services.enrollment_sync import DeviceKey, ReplacementDevice, replace_device

    try:
        old = DeviceKey(head_end_system=old_head_end, nic_id=old_nic_id)
    except ValidationError as error:
        fail_validation("bad old device", error, {"head_end_system": "--old-head-end", "nic_id": "--old-nic-id"})
    new_options = {
        "head_end_system": "--new-head-end",
        "nic_id": "--new-nic-id",
        "device_type": "--device-type",
        "manufacturer": "--manufacturer",
        "model": "--model",
        "serial_no": "--serial-no",
    }
    try:
        new = ReplacementDevice(
            head_end_system=new_head_end,
            nic_id=new_nic_id,
            device_type=device_type.value,
            manufacturer=manufacturer,
            model=model,
            serial_no=serial_no,
        )
    except ValidationError as error:
        fail_validation("bad new device", error, new_options)

    async def work(runtime: Runtime) -> Any:
        return await replace_device(runtime.async_engine("assethub"), enrollment_id, old, new, now=runtime.clock.now())

    change = system_call(work, fields=new_options)
    out.print(
        f"{change.enrollment_id}: device replaced; sync {change.sync.sync_id} (sequence {change.sync.sequence}) sent"
    )
