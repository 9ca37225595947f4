"""What every page shares: the Inspector, the settings given to ``create_app``, and rendering.

Links and forms are written relative to the ASGI ``root_path`` of the request, so the dashboard
works under any mount path (``app.mount("/asynq", dashboard)``) or behind a proxy's prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from asynq_aio._connection import RedisClient, RedisConnOpt
from asynq_aio._inspector import Inspector
from asynq_aio._task import TaskState
from asynq_aio.web import present

__all__ = ["SECURITY_HEADERS", "BadRequest", "Dashboard", "link"]

# No framing (the confirm buttons cannot be clickjacked), scripts and styles only from this app.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# The order states are shown in, as in asynqmon and the Go CLI.
STATES = [
    TaskState.ACTIVE,
    TaskState.PENDING,
    TaskState.AGGREGATING,
    TaskState.SCHEDULED,
    TaskState.RETRY,
    TaskState.ARCHIVED,
    TaskState.COMPLETED,
]


class BadRequest(Exception):
    """Input the dashboard cannot use (a page number that is not a positive integer, ...): 400."""


def link(request: Request, path: str, params: Mapping[str, object] | None = None) -> str:
    """``path`` under the request's mount point, with a query string of the non-empty ``params``."""
    base = request.scope.get("root_path", "").rstrip("/")
    query = {k: str(v) for k, v in (params or {}).items() if v is not None and v != ""}
    return f"{base}{path}" + (f"?{urlencode(query)}" if query else "")


@dataclass
class Dashboard:
    """The state of one dashboard app: where to read, whether it may write, and its templates."""

    source: Inspector | RedisConnOpt | RedisClient
    read_only: bool
    refresh_seconds: float
    token: str
    title: str
    env: Environment = field(init=False)
    _inspector: Inspector | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.env = Environment(
            loader=PackageLoader("asynq_aio.web", "templates"),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            time=present.fmt_time,
            when=present.fmt_when,
            duration=present.fmt_duration,
            bytes=present.fmt_bytes,
            preview=present.preview,
        )
        if isinstance(self.source, Inspector):
            self._inspector = self.source

    @property
    def owns_inspector(self) -> bool:
        """Whether the dashboard opened its Inspector (and so must close it)."""
        return not isinstance(self.source, Inspector)

    def inspector(self) -> Inspector:
        """The Inspector, opened on first use: inside the server's event loop, whichever that is."""
        if self._inspector is None:
            assert not isinstance(self.source, Inspector)
            self._inspector = Inspector(self.source)
        return self._inspector

    async def aclose(self) -> None:
        """Close the Inspector if the dashboard opened it; a borrowed one is the owner's to close."""
        if self.owns_inspector and self._inspector is not None:
            insp, self._inspector = self._inspector, None
            await insp.aclose()

    def render(self, request: Request, template: str, *, status: int = 200, **ctx: Any) -> HTMLResponse:
        """Render a page with what every page needs (links, token, read-only flag) added."""

        def url(path: str, **params: object) -> str:
            return link(request, path, params)

        ctx.setdefault("live_queue", "")  # the queue whose figures the page refreshes ("": all)
        body = self.env.get_template(template).render(
            url=url,
            base=request.scope.get("root_path", "").rstrip("/"),
            read_only=self.read_only,
            token=self.token,
            refresh_ms=int(self.refresh_seconds * 1000),
            title=self.title,
            now=datetime.now(tz=UTC),
            states=STATES,
            **ctx,
        )
        return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)
