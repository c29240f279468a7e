"""Routing: recipient -> Route (pure decision), domain routes, DNS MX/A resolution."""

from sitemail.routing.route import Route, Transport

__all__ = ["Route", "Transport"]
