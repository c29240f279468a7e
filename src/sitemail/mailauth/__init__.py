"""Mail authentication: DKIM keys and signing on the way out, SPF/DKIM/DMARC at the edge.

Modules: `dkimkeys` (this site's DKIM keys, selectors and the public records to publish),
`signing` (DKIM signatures on mail leaving the organisation), `dnstxt` (TXT lookups through
the site's own name servers, bounded), `edge` (SPF, DKIM and DMARC verdicts on mail from the
Internet, and the Authentication-Results header).
"""
