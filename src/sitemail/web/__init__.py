"""The admin HTTP API (FastAPI) served by `sitemail serve`: `create_app` and `serve_api`.

Sits above `sitemail.admin` (it calls the same AdminService as the CLI) and below
`sitemail.site` (which runs it in the server's event loop).
"""

from sitemail.web.app import create_app
from sitemail.web.metrics import Metrics
from sitemail.web.server import bind_api_socket, serve_api

__all__ = ["Metrics", "bind_api_socket", "create_app", "serve_api"]
