"""The flat public API: ``asynq_aio.__all__`` names exactly what the package exports."""

from __future__ import annotations

import types

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
    from asynq_aio import periodic, scheduler

    assert asynq_aio.Scheduler is scheduler.Scheduler
    assert asynq_aio.PeriodicTaskManager is periodic.PeriodicTaskManager
    for name in ("CronEntry", "EntryOptions", "Fire", "PeriodicTaskConfig", "SyncResult"):
        assert name in asynq_aio.__all__
