"""The flat public API: ``asynq_aio.__all__`` names exactly what the package exports."""

from __future__ import annotations

import types
from pathlib import Path

import asynq_aio


def test_all_matches_the_exported_names() -> None:
    exported = {
        name
        for name, value in vars(asynq_aio).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(asynq_aio.__all__) == exported
    assert sorted(asynq_aio.__all__) == list(asynq_aio.__all__)


def test_every_error_is_an_asynq_error() -> None:
    errors = [
        getattr(asynq_aio, n) for n in asynq_aio.__all__ if n.endswith(("Error", "Retry", "Task", "Name"))
    ]
    for cls in errors:
        if isinstance(cls, type) and issubclass(cls, Exception):
            assert issubclass(cls, asynq_aio.AsynqError), cls


def test_periodic_task_api_is_exported() -> None:
    """The scheduler types a user needs (to register entries, write hooks, feed a manager)."""
    from asynq_aio import _periodic, _scheduler

    assert asynq_aio.Scheduler is _scheduler.Scheduler
    assert asynq_aio.PeriodicTaskManager is _periodic.PeriodicTaskManager
    for name in ("CronEntry", "EntryOptions", "Fire", "PeriodicTaskConfig", "SyncResult"):
        assert name in asynq_aio.__all__


#: The modules a user imports from; every other top-level module is private (named ``_x``). The
#: ``protocol`` and ``server`` packages are internal too; their names are the project's layout.
PUBLIC_MODULES = {"sync", "testing", "logfmt", "tracing", "metrics", "web", "contrib", "cli"}
INTERNAL_PACKAGES = {"protocol", "server"}


def test_internal_modules_are_private_and_the_public_ones_are_listed() -> None:
    root = Path(asynq_aio.__file__).parent
    modules = {
        p.stem
        for p in root.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert {m for m in modules if not m.startswith("_")} == PUBLIC_MODULES | INTERNAL_PACKAGES
