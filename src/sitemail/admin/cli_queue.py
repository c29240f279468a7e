"""`sitemail queue shape`: the queue by next hop and age, like Postfix's qshape.

One job: render `QueueAdmin.shape` for the command line (a table, or --json); registered on
`cli.py`'s queue group.
"""

from __future__ import annotations

from sitemail.admin.cli import DataDir, JsonFlag, admin, emit_json, handle_errors, out, queue_app
from sitemail.admin.wake import ask_attempts
from sitemail.queue.shape import HopRow, QueueShape

__all__ = ["queue_shape"]


def _line(row: HopRow, width: int) -> str:
    cells = "".join(f"{n:>9}" for n in (row.total, *row.counts))
    return f"{row.nexthop:<{width}}{cells}"


def render_shape(shape: QueueShape) -> list[str]:
    """The qshape table: a header, the TOTAL row, then a row per next hop."""
    width = max([len(row.nexthop) for row in (shape.total, *shape.hops)] + [7]) + 2
    header = f"{'':<{width}}" + "".join(f"{label:>9}" for label in ("T", *shape.labels))
    return [header, _line(shape.total, width), *(_line(row, width) for row in shape.hops)]


@queue_app.command("shape")
@handle_errors
def queue_shape(data_dir: DataDir = None, as_json: JsonFlag = False) -> None:
    """Queued recipients by next hop and age in minutes (T = total), like qshape."""
    with admin(data_dir) as service:
        # What deliveries in flight talk to is asked of the running server (none: none runs).
        directory = service.config.data_dir
        service.attempts = lambda: ask_attempts(directory) or []
        shape = service.queue.shape()
        if as_json:
            emit_json(shape.to_json())
            return
        for line in render_shape(shape):
            out.print(line, markup=False)
