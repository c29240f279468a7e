"""The lab: the article's three-site organisation on loopback, with an embedded DNS server."""
