"""Directory replication by mail: signed requests and answers, apply, pending partners."""
