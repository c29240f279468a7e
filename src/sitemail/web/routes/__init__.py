"""The admin API's routes, one module per part of the Administrator's tree.

One job: put every router under the authenticated `/api` router of `create_app`.
"""

from __future__ import annotations

from fastapi import APIRouter

from sitemail.web.routes import directory, ims, queue, replication

__all__ = ["ROUTERS", "register"]

ROUTERS = (directory.router, ims.router, replication.router, queue.router)


def register(api: APIRouter) -> None:
    for router in ROUTERS:
        api.include_router(router)
