"""Refusing cross-site and read-only changes: every POST must carry the form token and, when the
browser says where it comes from (Origin, else Referer), come from the dashboard's own host.

The token is a per-process secret written into each form. Another site can make a browser POST to
the dashboard but cannot read its pages, so it cannot know the token; the origin check stops such a
request even before the token is looked at, and both must pass.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import Request

__all__ = ["Refused", "check_post"]


class Refused(Exception):
    """A POST the dashboard will not act on; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _same_host(source: str, host: str) -> bool:
    netloc = urlsplit(source).netloc.lower()
    return bool(netloc) and netloc == host.lower()


def check_post(request: Request, form_token: str | None, *, token: str, read_only: bool) -> None:
    """Raise :class:`Refused` unless the POST may change state: not read-only, same origin, right token."""
    if read_only:
        raise Refused(403, "This dashboard is read-only: it does not change queues or tasks.")
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None:
        if not _same_host(origin, host):
            raise Refused(403, f"Refused a cross-site request (Origin {origin!r} is not this dashboard).")
    else:
        referer = request.headers.get("referer")
        if referer is not None and not _same_host(referer, host):
            raise Refused(403, "Refused a cross-site request (it came from another site's page).")
    if not form_token or not hmac.compare_digest(form_token.encode(), token.encode()):
        raise Refused(403, "Refused: the form token is missing or stale. Reload the page and try again.")
