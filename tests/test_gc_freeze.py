"""Config.gc_freeze (asynq_aio/server/gc_freeze.py): a Server asked to freezes the objects alive a
few seconds after its start, once; one not asked to leaves the collector alone (it is process-wide,
and an application embedding a Server decides for itself)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import anyio
import pytest
from workerproc import wait_until

from asynq_aio import Config, Server, Task, parse_redis_url
from asynq_aio.server import gc_freeze

pytestmark = pytest.mark.anyio


async def noop(task: Task) -> None:
    pass


@pytest.fixture
def thawed() -> Iterator[None]:
    """Start and end unfrozen: a freeze left behind would keep every later test's garbage alive."""
    gc.unfreeze()
    yield
    gc.unfreeze()


async def test_a_server_with_gc_freeze_freezes_after_start_and_one_without_does_not(
    single_redis_url: str, unique_queue: str, monkeypatch: pytest.MonkeyPatch, thawed: None
) -> None:
    monkeypatch.setattr(gc_freeze, "SETTLE_SECONDS", 0.3)
    opt = parse_redis_url(single_redis_url)
    async with Server(opt, Config(queues={unique_queue: 1}, shutdown_timeout=1.0)).serve(noop):
        await anyio.sleep(1.0)
        assert gc.get_freeze_count() == 0
    async with Server(opt, Config(queues={unique_queue: 1}, shutdown_timeout=1.0, gc_freeze=True)).serve(
        noop
    ):
        assert gc.get_freeze_count() == 0  # not before start-up has settled

        async def frozen() -> bool:
            return gc.get_freeze_count() > 0

        await wait_until(frozen, 10, what="start-up objects frozen")
