"""Chaos 1: a worker process is SIGKILLed mid-task under steady load. Every acknowledged task still
finishes; the killed worker's in-flight tasks run again elsewhere within the configured lease time
(seconds, not Asynq's 60-120 s); only tasks the killed worker was running may run twice."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import anyio
import pytest
from harness import (
    ChaosResult,
    OrphanSampler,
    Producer,
    RunLog,
    chaos_config,
    chaos_mux,
    duplicates_by_worker,
    own_cluster,
    spawn_worker,
    wait_drained,
)
from workerproc import wait_until

from asynq_aio import Client, RedisClusterClientOpt, RetryPolicy, Server

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LEASE = 2.0


async def test_sigkilled_worker_loses_nothing_and_is_recovered_within_the_lease(tmp_path: Path) -> None:
    queue = f"chaos_kill_{uuid.uuid4().hex[:6]}"
    runlog = RunLog(tmp_path / "runs.log")
    with own_cluster() as cluster:
        opt = RedisClusterClientOpt(addrs=cluster.addrs)
        victim = spawn_worker(
            queue=queue,
            runlog=runlog.path,
            name="victim",
            log_path=tmp_path / "victim.log",
            addrs=cluster.addrs,
            lease=LEASE,
            # longer than the survivor's tasks, so the victim surely holds some when it is killed
            work=1.0,
            concurrency=4,
        )
        try:
            async with Client(opt, retry=RetryPolicy(budget=30)) as client:
                producer = Producer(client, queue, interval=0.05)
                sampler = OrphanSampler(client, queue)
                survivor = Server(opt, chaos_config(queue, lease=LEASE, concurrency=8))
                async with anyio.create_task_group() as tg:
                    tg.start_soon(producer.run)
                    tg.start_soon(sampler.run, producer.stopped)

                    def in_flight() -> set[str]:
                        ev = [e for e in runlog.events() if e.worker == "victim"]
                        return {e.task_id for e in ev if e.kind == "S"} - {
                            e.task_id for e in ev if e.kind == "D"
                        }

                    async def victim_busy() -> bool:
                        assert victim.poll() is None, (tmp_path / "victim.log").read_text()
                        return len(in_flight()) >= 2

                    # the victim alone serves the queue at first, so it surely holds tasks when killed
                    await wait_until(victim_busy, 30, what="the victim worker to run tasks")
                    async with survivor.serve(chaos_mux(runlog, "survivor", 0.2)):
                        await anyio.sleep(0.5)
                        await wait_until(victim_busy, 10, what="the victim to hold tasks")
                        killed_at = time.time()
                        os.kill(victim.pid, signal.SIGKILL)
                        victim.wait(timeout=5)
                        lost_in_flight = in_flight()
                        await anyio.sleep(LEASE + 2.0)  # keep the load on through the recovery
                        producer.stop()
                        await wait_drained(client, queue, set(producer.acked), runlog, timeout=30)
        finally:
            if victim.poll() is None:
                victim.kill()
                victim.wait()
            runlog.close()

    # recovered = picked up again by another worker (its handler started)
    reruns = [
        e.at
        for e in runlog.events()
        if e.kind == "S" and e.worker != "victim" and e.task_id in lost_in_flight
    ]
    recovery = max(reruns) - killed_at if reruns and len(reruns) >= len(lost_in_flight) else None
    result = ChaosResult.collect(
        "worker SIGKILL mid-task",
        producer,
        runlog,
        recovery_s=recovery,
        orphans_seen=sampler.orphans,
        notes=f"lease={LEASE}s in_flight_at_kill={len(lost_in_flight)}",
    )
    result.report()
    assert producer.failures == []
    assert result.lost == 0
    assert lost_in_flight, "the victim held no task when it was killed"
    # every task the victim was running started again elsewhere within about one lease (+ the
    # recovery and forward intervals and the whole-second rounding of the lease expiry)
    assert recovery is not None and recovery < LEASE + 4
    # only a task the victim ran can run twice (it finished the handler, but its ack died with it)
    for workers in duplicates_by_worker(runlog).values():
        assert "victim" in workers
    assert sampler.orphans == 0
