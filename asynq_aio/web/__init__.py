"""The web dashboard (the ``web`` extra: ``pip install asynq-aio[web]``): queues, tasks, servers,
scheduler entries and Redis, read through :class:`asynq_aio.Inspector`, so Go and Python fleets show
alike. :func:`create_app` returns a Starlette app to run with uvicorn (``asynq-aio web``) or to mount
in a FastAPI/Starlette app under any path."""

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - only without the extra installed
    raise ImportError(f"asynq_aio.web needs the web extra: pip install 'asynq-aio[web]' ({exc})") from exc

from asynq_aio.web.app import create_app

__all__ = ["create_app"]
