"""A lab user's mail to the Internet: the proof that a site reaches the outside.

One job: as a user's mail client would, submit one message to someone at the lab's
Internet through the user's own site (submission port, STARTTLS, AUTH with the lab's
password), then wait until the lab's Internet has it and say what its DKIM check found.
The site's path is the article's: routing sends a recipient outside the organisation by
MX, the lab DNS's MX for internet.test names the lab's Internet.
"""

from __future__ import annotations

import smtplib
import ssl
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sitemail.lab.internet import INTERNET_DOMAIN, Arrival, received

__all__ = ["OUTSIDE_RECIPIENT", "Submission", "submit", "wait_for_arrival"]

OUTSIDE_RECIPIENT = f"someone@{INTERNET_DOMAIN}"


@dataclass(frozen=True, slots=True)
class Submission:
    address: str  # the site's address
    port: int  # its submission port (STARTTLS)
    login: str  # the user's address
    password: str
    display_name: str


def submit(how: Submission) -> str:
    """Send one message to OUTSIDE_RECIPIENT; its Message-ID."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the lab's self-signed certificates
    domain = how.login.rpartition("@")[2]
    message_id = f"<lab.out.{uuid.uuid4().hex[:12]}@{domain}>"
    body = (
        f"From: {how.display_name} <{how.login}>\r\nTo: <{OUTSIDE_RECIPIENT}>\r\n"
        f"Subject: Hello Internet\r\nMessage-ID: {message_id}\r\n"
        f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n\r\n"
        "Sent from the lab, signed on its way out.\r\n"
    )
    with smtplib.SMTP(how.address, how.port, timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.login(how.login, how.password)
        smtp.sendmail(how.login, [OUTSIDE_RECIPIENT], body.encode())
    return message_id


def wait_for_arrival(root: Path, message_id: str, limit: float = 60) -> Arrival | None:
    """The lab's Internet's record of `message_id`, once it has it (None after `limit` s)."""
    deadline = time.monotonic() + limit
    while True:
        for arrival in received(root):
            if arrival.message_id == message_id:
                return arrival
        if time.monotonic() > deadline:
            return None
        time.sleep(0.3)
