"""``python -m asynq_aio.contrib.django``: the worker for a Django project's asynq-aio TASKS backend.

It reads the Redis URL and queues from the project's settings (``--settings`` or
``DJANGO_SETTINGS_MODULE``), so the worker and the views cannot disagree about where tasks live,
and runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import os

import anyio

from asynq_aio.contrib.django import backend_connection, worker_app
from asynq_aio.logfmt import configure_logging


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, set up Django and serve the backend's queues."""
    p = argparse.ArgumentParser(prog="python -m asynq_aio.contrib.django", description=__doc__)
    p.add_argument("--settings", help="Django settings module (default: $DJANGO_SETTINGS_MODULE)")
    p.add_argument("--backend", default="default", help="the TASKS alias to serve (default: default)")
    p.add_argument("--concurrency", type=int, default=None, help="tasks run at once (default: CPU count)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if args.settings:
        os.environ["DJANGO_SETTINGS_MODULE"] = args.settings
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        p.error("no Django settings: pass --settings or set DJANGO_SETTINGS_MODULE")
    configure_logging(args.log_level)
    app = worker_app(args.backend, concurrency=args.concurrency)
    anyio.run(app.run, backend_connection(args.backend))


if __name__ == "__main__":
    main()
