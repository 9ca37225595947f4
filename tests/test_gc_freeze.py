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


async def test_after_the_freeze_the_server_times_the_full_passes_and_restores_the_thresholds(
    single_redis_url: str, unique_queue: str, monkeypatch: pytest.MonkeyPatch, thawed: None
) -> None:
    """The collector's own full passes are switched off while the server runs (their trigger keeps
    firing every few seconds for the watchers' short-lived objects) and the young generations get
    smaller thresholds; the server runs a full pass every FULL_PASS_SECONDS instead, and the
    thresholds are what they were once it stops."""
    monkeypatch.setattr(gc_freeze, "SETTLE_SECONDS", 0.2)
    monkeypatch.setattr(gc_freeze, "FULL_PASS_SECONDS", 0.2)
    before = gc.get_threshold()
    opt = parse_redis_url(single_redis_url)
    config = Config(queues={unique_queue: 1}, shutdown_timeout=1.0, gc_freeze=True)
    async with Server(opt, config).serve(noop):

        async def timed() -> bool:
            return gc.get_threshold()[2] == gc_freeze._NO_AUTOMATIC_FULL_PASS

        await wait_until(timed, 10, what="automatic full passes switched off")
        assert gc.get_threshold()[:2] == (gc_freeze.YOUNG_THRESHOLD, gc_freeze.MIDDLE_THRESHOLD)
        passes: int = gc.get_stats()[2]["collections"]

        async def collected() -> bool:
            now: int = gc.get_stats()[2]["collections"]
            return now >= passes + 2

        await wait_until(collected, 10, what="two timed full passes")
    assert gc.get_threshold() == before
