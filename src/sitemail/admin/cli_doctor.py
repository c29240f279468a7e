"""`sitemail doctor`: render the doctor's findings; exit 1 when any is an error.

One job: parse and render for `admin.doctor.run_doctor`; registered on the main app by `cli.py`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sitemail.admin.cli import DataDir, JsonFlag, admin, app, emit_json, handle_errors, out
from sitemail.admin.datadir import resolve_data_dir
from sitemail.admin.doctor import (
    ROUND_TRIP_DEFAULT,
    ROUND_TRIP_MAX,
    ROUND_TRIP_MIN,
    Finding,
    Level,
    run_doctor,
)
from sitemail.admin.wake import poke

__all__ = ["doctor"]

# Exit status: 0 when nothing is wrong (warnings allowed), 1 when a check found an error.
EXIT_PROBLEMS = 1

_MARK = {Level.OK: "ok     ", Level.WARNING: "WARNING", Level.ERROR: "ERROR  "}


@app.command("doctor")
@handle_errors
def doctor(
    site: Annotated[
        str | None, typer.Option("--site", help="Check only this site (its directory name).")
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=ROUND_TRIP_MIN,
            max=ROUND_TRIP_MAX,
            help="Seconds to wait for each round trip.",
        ),
    ] = ROUND_TRIP_DEFAULT,
    data_dir: DataDir = None,
    as_json: JsonFlag = False,
) -> None:
    """Check DNS, every site's IMS, connectors, replication, routing and a round trip of mail
    to each site; say how to fix what is wrong. Exit 1 when an error is found."""
    where = resolve_data_dir(data_dir)
    with admin(where) as service:
        findings = run_doctor(
            service, site=site, round_trip_timeout=timeout, wake=lambda: poke(where)
        )
    if as_json:
        emit_json(
            [
                {"check": f.check, "level": str(f.level), "message": f.message, "fix": f.fix}
                for f in findings
            ]
        )
    else:
        _show(findings)
    if any(f.level is Level.ERROR for f in findings):
        raise typer.Exit(EXIT_PROBLEMS)


def _show(findings: list[Finding]) -> None:
    for f in findings:
        out.print(f"{_MARK[f.level]} {f.check:16} {f.message}", markup=False)
        if f.fix and f.level is not Level.OK:
            fix = f.fix.replace("\n", "\n" + " " * 29)  # several zone lines stay aligned
            out.print(f"{'':24} fix: {fix}", markup=False)
    counts = {level: sum(1 for f in findings if f.level is level) for level in Level}
    out.print(
        f"\n{counts[Level.OK]} ok, {counts[Level.WARNING]} warning(s), "
        f"{counts[Level.ERROR]} error(s)",
        markup=False,
    )
