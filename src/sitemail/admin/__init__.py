"""Administration: AdminService shared by the CLI (Typer+Rich), later the HTTP API and console."""

from sitemail.admin.service import AdminService

__all__ = ["AdminService"]
