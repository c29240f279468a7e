"""Routing: recipient -> Route (pure), the routing table, DNS MX/A resolution."""
