"""A load harness for chaos tests: a producer, workers (in-process and as subprocesses), a record of
every handler run kept outside the Redis under test, and the invariant check that ends each test.

Every chaos test runs the same loop: start a steady load, inject one fault, let the system heal, wait
until every acknowledged enqueue has run, then compare. The record of runs is an append-only file
(``RunLog``), not a Redis key: the fault hits the Redis under test, and a record kept there could be
lost with the very data it is meant to check. Subprocess workers append to the same file, and a line
already written survives their SIGKILL.

The result of each run (``ChaosResult``) is printed (``pytest -s`` shows it) and, when the environment
variable ``CHAOS_RESULTS`` names a file, appended to it as one JSON line; docs/reliability.md quotes
the figures of such a run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import anyio
from redis.crc import key_slot
from workerproc import wait_until

from asynq_aio import Client, Config, RetryPolicy, ServeMux, Server, Task, current_task
from asynq_aio._connection import RedisConnOpt
from asynq_aio._devcluster import DevCluster, find_free_port_base, find_redis_server
from asynq_aio.protocol.keys import queue_keys

__all__ = [
    "JOB_TYPE",
    "ChaosResult",
    "OrphanSampler",
    "Producer",
    "RedisProcess",
    "LoadRun",
    "RunLog",
    "assert_nothing_lost",
    "run_with_fault",
    "chaos_config",
    "chaos_mux",
    "master_port",
    "own_cluster",
    "queue_backlog",
    "spawn_worker",
    "wait_drained",
]

JOB_TYPE = "chaos:job"
CHAOS_WORKER = Path(__file__).with_name("chaosworker.py")
TESTS_DIR = Path(__file__).parent.parent


# -- the record of handler runs ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunEvent:
    kind: str  # "S" handler started, "D" handler finished
    worker: str
    task_id: str
    at: float  # unix seconds


class RunLog:
    """Append-only file of handler events, one line each: ``<S|D> <worker> <task id> <unix time>``.

    Lines are written with one ``os.write`` on an ``O_APPEND`` descriptor: atomic between processes,
    and in the kernel (so kept) as soon as the call returns, even if the process is SIGKILLed next.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def write(self, kind: str, worker: str, task_id: str) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self._fd, f"{kind} {worker} {task_id} {time.time():.6f}\n".encode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def events(self) -> list[RunEvent]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:  # a torn last line of a killed writer cannot happen, but never trust it
                out.append(RunEvent(parts[0], parts[1], parts[2], float(parts[3])))
        return out

    def done_ids(self) -> set[str]:
        return {e.task_id for e in self.events() if e.kind == "D"}


def chaos_mux(runlog: RunLog, worker: str, work_s: float) -> ServeMux:
    """A mux whose handler records its start, works for ``work_s`` and records its end."""

    async def handler(task: Task) -> None:
        tid = current_task().id
        runlog.write("S", worker, tid)
        await anyio.sleep(work_s)
        runlog.write("D", worker, tid)

    mux = ServeMux()
    mux.handle_func(JOB_TYPE, handler)
    return mux


def chaos_config(
    queue: str,
    *,
    lease: float,
    concurrency: int = 8,
    heartbeat: float | None = None,
    recovery: float = 0.5,
    idle_wait: float = 0.3,
) -> Config:
    """A server config with short, test-sized timings (leases of a few seconds, not 30)."""
    return Config(
        concurrency=concurrency,
        queues={queue: 1},
        lease_duration=lease,
        heartbeat_interval=heartbeat if heartbeat is not None else lease / 4,
        recovery_interval=recovery,
        recovery_skew=0.0,
        retry_delay_func=lambda n, e, t: 0.0,  # recovered tasks run again at once
        forward_interval=0.2,
        idle_wait=idle_wait,
        shutdown_timeout=1.0,
    )


# -- the producer ------------------------------------------------------------------------------------


@dataclass
class Producer:
    """Enqueues one task every ``interval`` seconds until stopped; remembers each acknowledged ID with
    when its enqueue was issued and acknowledged, and every enqueue that raised."""

    client: Client
    queue: str
    interval: float = 0.01
    acked: dict[str, tuple[float, float]] = field(default_factory=dict)  # id -> (issued, acked)
    failures: list[BaseException] = field(default_factory=list)
    stopped: anyio.Event = field(default_factory=anyio.Event)

    async def run(self, *, count: int | None = None) -> None:
        n = len(self.acked) + len(self.failures)
        end = None if count is None else n + count
        while not self.stopped.is_set() and (end is None or n < end):
            issued = time.time()
            try:
                info = await self.client.enqueue(Task(JOB_TYPE, str(n).encode()), queue=self.queue)
            except Exception as exc:  # counted, then asserted by the test
                self.failures.append(exc)
            else:
                self.acked[info.id] = (issued, time.time())
            n += 1
            await anyio.sleep(self.interval)

    def stop(self) -> None:
        self.stopped.set()

    def issued_after(self, t: float) -> set[str]:
        return {tid for tid, (issued, _) in self.acked.items() if issued >= t}

    def max_latency(self) -> float:
        return max((a - i for i, a in self.acked.values()), default=0.0)


# -- waiting for the end and checking the invariants ------------------------------------------------


async def queue_backlog(client: Client, queue: str) -> dict[str, int]:
    """How many IDs sit in each state list of ``queue`` (all zero when it is drained)."""
    qk = queue_keys(queue)
    tr = client._broker.transport
    out = {}
    for name, cmd, key in (
        ("pending", "LLEN", qk.pending),
        ("active", "LLEN", qk.active),
        ("lease", "ZCARD", qk.lease),
        ("scheduled", "ZCARD", qk.scheduled),
        ("retry", "ZCARD", qk.retry),
        ("archived", "ZCARD", qk.archived),
    ):
        out[name] = int(await tr.call(cmd, key))
    return out


async def wait_drained(client: Client, queue: str, ids: set[str], runlog: RunLog, timeout: float) -> None:
    """Wait until every ID in ``ids`` finished a run and the queue holds nothing (nothing stuck)."""
    missing: set[str] = set(ids)
    backlog: dict[str, int] = {}

    async def drained() -> bool:
        nonlocal missing, backlog
        missing = ids - runlog.done_ids()
        if missing:
            return False
        backlog = await queue_backlog(client, queue)
        return not any(backlog.values())

    try:
        await wait_until(drained, timeout, interval=0.1, what="every acknowledged task to run")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {len(missing)} never ran, backlog {backlog}") from None


@dataclass
class ChaosResult:
    """The figures of one chaos run, as docs/reliability.md tabulates them."""

    scenario: str
    enqueued: int  # acknowledged enqueues
    completed: int  # distinct acknowledged IDs whose handler finished
    duplicates: int  # IDs whose handler finished more than once
    lost: int  # acknowledged but never finished
    failed_enqueues: int
    recovery_s: float | None
    max_enqueue_latency_s: float
    orphans_seen: int = 0  # samples of an ID in active without a lease
    notes: str = ""

    @classmethod
    def collect(
        cls,
        scenario: str,
        producer: Producer,
        runlog: RunLog,
        *,
        recovery_s: float | None,
        orphans_seen: int = 0,
        notes: str = "",
    ) -> ChaosResult:
        events = runlog.events()
        finished = Counter(e.task_id for e in events if e.kind == "D")
        acked = set(producer.acked)
        return cls(
            scenario=scenario,
            enqueued=len(acked),
            completed=len(acked & set(finished)),
            duplicates=sum(1 for n in finished.values() if n > 1),
            lost=len(acked - set(finished)),
            failed_enqueues=len(producer.failures),
            recovery_s=None if recovery_s is None else round(recovery_s, 2),
            max_enqueue_latency_s=round(producer.max_latency(), 2),
            orphans_seen=orphans_seen,
            notes=notes,
        )

    def report(self) -> None:
        line = (
            f"[chaos] {self.scenario}: enqueued={self.enqueued} completed={self.completed} "
            f"duplicates={self.duplicates} lost={self.lost} failed_enqueues={self.failed_enqueues} "
            f"recovery_s={self.recovery_s} max_enqueue_latency_s={self.max_enqueue_latency_s} "
            f"orphans_seen={self.orphans_seen} {self.notes}"
        )
        print(line)  # noqa: T201 - the figures are the point of the test
        out = os.environ.get("CHAOS_RESULTS")
        if out:
            with open(out, "a") as f:
                f.write(json.dumps(asdict(self)) + "\n")


def recovery_since(producer: Producer, runlog: RunLog, fault_at: float) -> float | None:
    """Seconds from the fault until a task enqueued after it had run end to end (the first one)."""
    fresh = producer.issued_after(fault_at)
    done = [e.at for e in runlog.events() if e.kind == "D" and e.task_id in fresh]
    return min(done) - fault_at if done else None


def duplicates_by_worker(runlog: RunLog) -> dict[str, set[str]]:
    """For each ID finished more than once: the workers that finished it."""
    by_id: dict[str, list[str]] = defaultdict(list)
    for e in runlog.events():
        if e.kind == "D":
            by_id[e.task_id].append(e.worker)
    return {tid: set(ws) for tid, ws in by_id.items() if len(ws) > 1}


class OrphanSampler:
    """Samples ``lease``, ``active``, ``lease`` again of a queue and counts IDs found in active but in
    neither lease sample: a task active without a lease, which no script should ever leave behind.

    Reading the lease before and after the active list makes a dequeue or an ack that lands between
    two reads invisible (the ID is in one of the lease samples); only an ID dequeued and acked within
    the same few milliseconds could fool it, and the chaos handler works far longer than that.
    """

    def __init__(self, client: Client, queue: str, interval: float = 0.1) -> None:
        self.client = client
        self.queue = queue
        self.interval = interval
        self.samples = 0
        self.orphans = 0
        self.errors = 0

    async def run(self, stop: anyio.Event) -> None:
        qk = queue_keys(self.queue)
        tr = self.client._broker.transport
        while not stop.is_set():
            try:
                before = set(await tr.call("ZRANGE", qk.lease, 0, -1))
                active = set(await tr.call("LRANGE", qk.active, 0, -1))
                after = set(await tr.call("ZRANGE", qk.lease, 0, -1))
            except Exception:  # during a fault a sample can fail; the next one counts
                self.errors += 1
            else:
                self.samples += 1
                self.orphans += len(active - before - after)
            await anyio.sleep(self.interval)


# -- worker subprocesses ---------------------------------------------------------------------------


def spawn_worker(
    *,
    queue: str,
    runlog: Path,
    name: str,
    log_path: Path,
    addrs: list[str] | None = None,
    url: str | None = None,
    lease: float = 2.0,
    work: float = 0.2,
    concurrency: int = 4,
) -> subprocess.Popen[bytes]:
    """Start ``chaosworker.py`` serving ``queue`` with the chaos handler (kill it with SIGKILL)."""
    conn = ["--url", url] if url else ["--cluster", ",".join(addrs or [])]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(CHAOS_WORKER.parent), env.get("PYTHONPATH", "")])
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                str(CHAOS_WORKER),
                "--queue",
                queue,
                *conn,
                "--runlog",
                str(runlog),
                "--name",
                name,
                "--lease",
                str(lease),
                "--work",
                str(work),
                "--concurrency",
                str(concurrency),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


# -- Redis processes owned by one test ---------------------------------------------------------------


@contextmanager
def own_cluster(node_timeout_ms: int = 2000) -> Iterator[DevCluster]:
    """A fresh 6-node DevCluster (3 masters, 3 replicas) for one destructive test; removed after."""
    base_dir = Path(tempfile.mkdtemp(prefix="asynq-aio-chaos-"))
    base = find_free_port_base(6)
    cluster = DevCluster(
        base_dir, ports=range(base, base + 6), appendonly=False, node_timeout_ms=node_timeout_ms
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop(remove_data=True)
        shutil.rmtree(base_dir, ignore_errors=True)


def master_port(cluster: DevCluster, queue: str) -> int:
    """The port of the master that serves ``queue``'s slot now."""
    slot = key_slot(queue.encode())
    for node in cluster.status():
        if node.role == "master" and any(lo <= slot <= hi for lo, hi in node.slots):
            return node.port
    raise AssertionError(f"no master serves slot {slot}")


class RedisProcess:
    """One standalone redis-server on a free port with AOF fsynced on every write, killable and
    restartable on the same port and data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = find_free_port_base(1)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                find_redis_server(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ping()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)

    def _wait_ping(self, timeout: float = 10.0) -> None:
        import redis as sync_redis

        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on {self.port} exited with {self.proc.returncode}")
            client = sync_redis.Redis(port=self.port, socket_connect_timeout=0.5, socket_timeout=1.0)
            try:
                if client.ping():
                    return
            except sync_redis.RedisError:
                pass
            finally:
                client.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.port} did not answer PING in {timeout}s")
            time.sleep(0.05)


# -- one scenario, end to end ----------------------------------------------------------------------


@dataclass
class LoadRun:
    producer: Producer
    sampler: OrphanSampler
    fault_at: float
    fault_done_at: float


async def run_with_fault(
    opt: RedisConnOpt,
    queue: str,
    runlog: RunLog,
    fault: Callable[[], Awaitable[object]],
    *,
    lease: float,
    servers: int = 2,
    warmup: float = 1.0,
    after: float = 1.5,
    interval: float = 0.02,
    work: float = 0.05,
    budget: float = 60.0,
    drain_timeout: float = 60.0,
    preload: int = 0,
) -> LoadRun:
    """Steady load (one producer, ``servers`` in-process servers named w0, w1, ...), then ``fault``,
    then ``after`` more seconds of load (``preload`` tasks are enqueued before the servers start, for a
    backlog); returns once every acknowledged task ran and the queue is
    empty (or fails the test)."""
    async with Client(opt, retry=RetryPolicy(budget=budget)) as client:
        producer = Producer(client, queue, interval=interval)
        sampler = OrphanSampler(client, queue)
        await producer.run(count=preload)
        async with AsyncExitStack() as stack:
            for i in range(servers):
                server = Server(opt, chaos_config(queue, lease=lease), retry=RetryPolicy(budget=budget))
                await stack.enter_async_context(server.serve(chaos_mux(runlog, f"w{i}", work)))
            async with anyio.create_task_group() as tg:
                tg.start_soon(producer.run)
                tg.start_soon(sampler.run, producer.stopped)
                await anyio.sleep(warmup)
                fault_at = time.time()
                await fault()
                fault_done_at = time.time()
                await anyio.sleep(after)
                producer.stop()
            await wait_drained(client, queue, set(producer.acked), runlog, timeout=drain_timeout)
    return LoadRun(producer, sampler, fault_at, fault_done_at)


def assert_nothing_lost(scenario: str, run: LoadRun, runlog: RunLog, notes: str = "") -> ChaosResult:
    """Report the run's figures; fail on any failed enqueue, lost task, duplicate or orphan."""
    result = ChaosResult.collect(
        scenario,
        run.producer,
        runlog,
        recovery_s=recovery_since(run.producer, runlog, run.fault_at),
        orphans_seen=run.sampler.orphans,
        notes=notes,
    )
    result.report()
    assert run.producer.failures == [], run.producer.failures[:3]
    assert result.enqueued > 0
    assert result.lost == 0
    assert result.duplicates == 0  # no worker died, so nothing may run twice
    assert result.orphans_seen == 0
    assert result.recovery_s is not None
    return result
