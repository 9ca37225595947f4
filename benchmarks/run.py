"""``python -m benchmarks.run [--quick]``: asynq-aio, Go Asynq and the Python peers, side by side.

Starts its own Redis (a single redis-server and a 3-master cluster, on free ports), creates a venv per
system on first use (benchmarks/envs.py), then runs every scenario ``--repeats`` times, systems
interleaved and their order rotated each round, so that load from other processes hits all systems
alike. Prints one table of medians, writes ``benchmarks/results/<stamp>.json`` (every run) and
``latest.json`` + ``latest.png``.

Each measurement runs drivers as subprocesses (benchmarks/drv_<system>.py):

* worker throughput: the queue is filled first (that fill is also the concurrent enqueue figure,
  64 coroutines; Go Asynq 16 goroutines), then a worker with concurrency 100 drains it; rate =
  tasks / (last handler end - first handler start), so start-up and shutdown are excluded for every
  system alike;
* enqueue by one caller (asynq-aio and Go Asynq): one enqueue at a time, each call timed;
* pick-up latency: an idle worker, tasks enqueued one at a time 20 ms apart, each stamped with its
  enqueue time; latency = handler start - stamp;
* asynq-aio and Go Asynq: worker throughput on the 3-master cluster;
* asynq-aio only: scheduled tasks (start - T), 1/2/4 worker processes, a backlog of 1k vs 1M
  pending tasks, worker RSS idle and with 10,000 tasks in flight, Redis bytes per pending task.

Go Asynq (system ``go``) is the real Go Asynq v0.26.0, built from benchmarks/go/ with the local Go
toolchain; without one it is reported as not available and no Go figure is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from asynq_aio.protocol.keys import queue_keys
from benchmarks import envs, procs
from benchmarks.common import pct
from benchmarks.procs import ClusterRedis, Driver, DriverError, SingleRedis, run_once

RESULTS = envs.BENCH / "results"
DOCS_CHART = envs.ROOT / "docs" / "assets" / "benchmarks.png"
PEERS = ["go", "taskiq", "saq", "arq", "streaq"]
BATCHING = {"asynq", "streaq"}  # systems with a batched enqueue API (Go Asynq has none)
# Systems fast enough to drain plan.n_asynq tasks per throughput run (the Python peers get n_peer).
FAST = {"asynq", "go"}
# Systems that also run the one-caller enqueue and the cluster worker scenarios.
GO_PAIR = {"asynq", "go"}
# Concurrent callers for the enqueue that fills the queue: 64 coroutines, but 16 goroutines for Go
# Asynq, the comparison the issue made (Go's client is synchronous and its go-redis pool is sized
# by the CPU count).
ENQUEUE_CONC = {"go": 16}
DEFAULT_ENQUEUE_CONC = 64
# What the Go driver configures (benchmarks/go/main.go); recorded with every run that measured Go.
GO_CONFIG = (
    "asynq.Config{Concurrency: 100, Queues: {<queue>: 1}}, every other field at Go Asynq's default "
    "(TaskCheckInterval 1 s, so an idle processor sleeps 0.5-1.5 s between empty dequeues; "
    "ShutdownTimeout 8 s); asynq.NewClient with go-redis's default pool; handlers time.Sleep for "
    "the sleep case"
)


@dataclass
class Plan:
    repeats: int
    n_asynq: int  # tasks per asynq-aio throughput run
    n_peer: int  # tasks per peer throughput run (peers are 5-20x slower; same steady state, less time)
    n_latency: int
    n_serial: int  # tasks enqueued by a single caller, one at a time
    backlog: int  # the big backlog of the 1k-vs-big comparison
    n_scale: int
    scale_procs: tuple[int, ...]
    inflight: int


FULL = Plan(
    repeats=3,
    n_asynq=20_000,
    n_peer=5_000,
    n_latency=150,
    n_serial=5_000,
    backlog=1_000_000,
    n_scale=40_000,
    scale_procs=(1, 2, 4),
    inflight=10_000,
)
QUICK = Plan(
    repeats=1,
    n_asynq=5_000,
    n_peer=1_500,
    n_latency=50,
    n_serial=1_000,
    backlog=100_000,
    n_scale=10_000,
    scale_procs=(1, 2),
    inflight=10_000,
)


@dataclass
class Bench:
    plan: Plan
    systems: list[str]
    single: SingleRedis
    cluster: ClusterRedis | None
    runs: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0

    def record(self, scenario: str, system: str, rnd: int, **data: Any) -> None:
        row = {"scenario": scenario, "system": system, "round": rnd, **data}
        self.runs.append(row)
        shown = {k: v for k, v in data.items() if k != "latencies_ms"}
        print(f"    {scenario:<22} {system:<7} round {rnd}: {_brief(shown)}", flush=True)

    def tag(self) -> str:
        self.seq += 1
        return f"r{self.seq:04d}"


def label_of(system: str) -> str:
    if system == "asynq@base":
        return "asynq-aio (baseline)"
    return envs.SYSTEMS[system].label


def export_tree(rev: str) -> str:
    """``git archive`` the asynq_aio package as of ``rev`` into a temporary directory."""
    out = tempfile.mkdtemp(prefix="asynq-aio-baseline-")
    archive = subprocess.run(
        ["git", "archive", rev, "asynq_aio"], cwd=envs.ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", out], input=archive, check=True)
    return out


def _load(avg: tuple[float, float, float] | list[float]) -> str:
    return " / ".join(f"{x:.2f}" for x in avg)


def _brief(d: dict[str, Any]) -> str:
    out = []
    for k, v in d.items():
        out.append(f"{k}={v:,.1f}" if isinstance(v, float) else f"{k}={v}")
    return " ".join(out)


# -- scenarios -------------------------------------------------------------------------------------


def worker_throughput(
    b: Bench, system: str, rnd: int, *, handler: str, url: str, flush: Callable[[], None], scenario: str
) -> None:
    """Fill the queue one task at a time (64 coroutines, Go 16), then drain it with one worker."""
    base = system.partition("@")[0]
    n = b.plan.n_asynq if base in FAST else b.plan.n_peer
    conc = ENQUEUE_CONC.get(base, DEFAULT_ENQUEUE_CONC)
    flush()
    q = f"bench{rnd}"
    common = ["--url", url, "--queue", q]
    prod = run_once(system, "produce", [*common, "--n", str(n), "--conc", str(conc)], b.tag(), 300)
    w = Driver(system, "work", [*common, "--expect", str(n), "--conc", "100", "--handler", handler], b.tag())
    try:
        w.expect("READY", 60)
        res = w.expect("RESULT", 60 + n / 50)
    finally:
        w.stop()
    data: dict[str, Any] = {"rate": res["rate"], "n": n}
    if handler == "noop" and scenario in ("worker_noop", "worker_noop_cluster"):
        fill = "enqueue_one" if scenario == "worker_noop" else "enqueue_one_cluster"
        b.record(fill, system, rnd, rate=prod["rate"], n=n, conc=conc)
    b.record(scenario, system, rnd, **data)


def enqueue_serial(b: Bench, system: str, rnd: int, *, on_cluster: bool = False) -> None:
    """One caller, one enqueue at a time: the rate, and the latency of each call as the caller sees it.

    This is what a web request handler that enqueues a task pays, where the concurrent figure
    measures a bulk producer.
    """
    n = b.plan.n_serial
    target: SingleRedis | ClusterRedis = b.cluster if on_cluster and b.cluster is not None else b.single
    target.flush()
    args = ["--url", target.url, "--queue", f"serial{rnd}", "--n", str(n), "--conc", "1"]
    res = run_once(system, "produce", args, b.tag(), 300)
    b.record(
        "enqueue_serial_cluster" if on_cluster else "enqueue_serial",
        system,
        rnd,
        rate=res["rate"],
        n=n,
        call_p50_ms=res["call_p50_ms"],
        call_p99_ms=res["call_p99_ms"],
    )


def enqueue_many(b: Bench, system: str, rnd: int) -> None:
    n = b.plan.n_asynq
    b.single.flush()
    args = [
        "--url",
        b.single.url,
        "--queue",
        f"bench{rnd}",
        "--n",
        str(n),
        "--mode",
        "many",
        "--batch",
        "1000",
    ]
    res = run_once(system, "produce", args, b.tag(), 300)
    b.record("enqueue_many", system, rnd, rate=res["rate"], n=n)


def pickup_latency(b: Bench, system: str, rnd: int, *, on_cluster: bool = False) -> None:
    """An idle worker; tasks arrive one at a time 20 ms apart; latency = handler start - enqueue."""
    n = b.plan.n_latency
    target: SingleRedis | ClusterRedis = b.cluster if on_cluster and b.cluster is not None else b.single
    target.flush()
    common = ["--url", target.url, "--queue", f"lat{rnd}"]
    w = Driver(
        system, "work", [*common, "--expect", str(n), "--conc", "100", "--handler", "latency"], b.tag()
    )
    try:
        w.expect("READY", 60)
        time.sleep(1.5)  # let start-up work settle: the worker is idle when the first task arrives
        rss_idle = w.rss()
        run_once(system, "trickle", [*common, "--n", str(n), "--gap", "0.02"], b.tag(), 120)
        res = w.expect("RESULT", 60)
    finally:
        w.stop()
    lat = [x * 1000 for x in res["latencies"]]
    b.record(
        "latency_cluster" if on_cluster else "latency",
        system,
        rnd,
        p50_ms=pct(lat, 50),
        p99_ms=pct(lat, 99),
        rss_idle_mb=rss_idle / 2**20,
        latencies_ms=lat,
    )


def scheduled_start(b: Bench, rnd: int) -> None:
    """Tasks scheduled for whole seconds T (5 per second); delay = handler start - T."""
    n = max(10, b.plan.n_latency // 10)
    b.single.flush()
    common = ["--url", b.single.url, "--queue", f"sched{rnd}"]
    w = Driver(
        "asynq", "work", [*common, "--expect", str(n), "--conc", "100", "--handler", "latency"], b.tag()
    )
    try:
        w.expect("READY", 60)
        time.sleep(0.5)
        run_once(
            "asynq", "produce", [*common, "--n", str(n), "--conc", "1", "--process-in", "1.5"], b.tag(), 60
        )
        res = w.expect("RESULT", 30 + n)
    finally:
        w.stop()
    lat = [x * 1000 for x in res["latencies"]]
    b.record("scheduled", "asynq", rnd, p50_ms=pct(lat, 50), p99_ms=pct(lat, 99), latencies_ms=lat)


def scale(b: Bench, rnd: int, procs: int, *, on_cluster: bool) -> None:
    """``procs`` worker processes drain a prefilled backlog (3 queues on 3 masters on the cluster)."""
    n = b.plan.n_scale
    if on_cluster:
        assert b.cluster is not None
        url, flush, client = b.cluster.url, b.cluster.flush, None
        qs = _queues_on_distinct_masters(b.cluster, 3, rnd)
    else:
        url, flush, client = b.single.url, b.single.flush, b.single.client
        qs = [f"scale{rnd}"]
    flush()
    qarg = ",".join(qs)
    run_once(
        "asynq", "produce", ["--url", url, "--queue", qarg, "--n", str(n), "--mode", "many"], b.tag(), 300
    )
    _pause(b, qs, True, on_cluster)
    workers = [
        Driver("asynq", "work", ["--url", url, "--queue", qarg, "--conc", "100", "--expect", "0"], b.tag())
        for _ in range(procs)
    ]
    try:
        for w in workers:
            w.expect("READY", 60)
        _pause(b, qs, False, on_cluster)
        deadline = time.monotonic() + 60 + n / 200
        while time.monotonic() < deadline:
            time.sleep(0.1)
            if _queue_drained(b, qs, on_cluster):
                break
        for w in workers:
            w.signal(signal.SIGTERM)
        results = [w.expect("RESULT", 30) for w in workers]
    finally:
        for w in workers:
            w.stop()
    del client
    total = sum(r["count"] for r in results)
    span = max(r["last_end"] for r in results) - min(r["first_start"] for r in results if r["first_start"])
    name = f"scale_{'cluster' if on_cluster else 'single'}_{procs}"
    b.record(name, "asynq", rnd, rate=total / span, n=total, per_process=[r["count"] for r in results])


def _queues_on_distinct_masters(c: ClusterRedis, k: int, rnd: int) -> list[str]:
    seen: dict[int, str] = {}
    i = 0
    while len(seen) < k:
        q = f"c{rnd}q{i}"
        seen.setdefault(c.master_of(queue_keys(q).pending), q)
        i += 1
    return list(seen.values())


def _client_for(b: Bench, key: str, on_cluster: bool) -> Any:
    if not on_cluster:
        return b.single.client
    assert b.cluster is not None
    port = b.cluster.master_of(key)
    return next(c for c in b.cluster.clients if c.connection_pool.connection_kwargs["port"] == port)


def _pause(b: Bench, qs: list[str], paused: bool, on_cluster: bool) -> None:
    for q in qs:
        key = queue_keys(q).paused
        c = _client_for(b, key, on_cluster)
        if paused:
            c.set(key, int(time.time()))
        else:
            c.delete(key)


def _queue_drained(b: Bench, qs: list[str], on_cluster: bool) -> bool:
    for q in qs:
        qk = queue_keys(q)
        c = _client_for(b, qk.pending, on_cluster)
        if c.llen(qk.pending) or c.llen(qk.active):
            return False
    return True


def backlog(b: Bench, rnd: int, extra: int) -> None:
    """Drain ``n`` tasks that sit in front of ``extra`` more pending ones: does depth slow dequeue/ack?"""
    n = b.plan.n_asynq
    b.single.flush()
    q = f"deep{rnd}"
    common = ["--url", b.single.url, "--queue", q, "--mode", "many"]
    run_once("asynq", "produce", [*common, "--n", str(n)], b.tag(), 300)
    mem0 = b.single.used_memory()
    fill = run_once("asynq", "produce", [*common, "--n", str(extra)], b.tag(), 900)
    per_task = (b.single.used_memory() - mem0) / extra
    w = Driver(
        "asynq", "work", ["--url", b.single.url, "--queue", q, "--expect", str(n), "--conc", "100"], b.tag()
    )
    try:
        w.expect("READY", 60)
        res = w.expect("RESULT", 60 + n / 50)
    finally:
        w.stop()
    b.record(
        f"backlog_{extra}",
        "asynq",
        rnd,
        rate=res["rate"],
        n=n,
        fill_rate=fill["rate"],
        redis_bytes_per_task=per_task,
    )


def memory(b: Bench, rnd: int) -> None:
    """Worker RSS idle, and with ``inflight`` tasks held in flight at once (concurrency = inflight)."""
    n = b.plan.inflight
    b.single.flush()
    common = ["--url", b.single.url, "--queue", f"mem{rnd}"]
    w = Driver("asynq", "work", [*common, "--expect", "0", "--conc", "100"], b.tag())
    try:
        w.expect("READY", 60)
        time.sleep(2)
        idle = w.rss()
    finally:
        w.stop()
    run_once("asynq", "produce", [*common, "--n", str(n), "--mode", "many"], b.tag(), 120)
    w = Driver("asynq", "work", [*common, "--expect", str(n), "--conc", str(n), "--handler", "hold"], b.tag())
    try:
        w.expect("READY", 60)
        res = w.expect("RESULT", 120)
        held = w.rss()
    finally:
        w.kill()  # 10,000 held tasks: no graceful requeue needed, the Redis is ours and is flushed next
    b.record(
        "memory",
        "asynq",
        rnd,
        rss_idle_mb=idle / 2**20,
        rss_inflight_mb=max(held, res["rss"]) / 2**20,
        inflight=res["started"],
    )


# -- orchestration ---------------------------------------------------------------------------------


def _guard(b: Bench, what: str, system: str, rnd: int, fn: Callable[..., None], *a: Any, **kw: Any) -> None:
    """Run one measurement; a failure is recorded (and shown in the table as missing), not fatal."""
    try:
        fn(*a, **kw)
    except (DriverError, subprocess.SubprocessError, OSError, KeyError, ValueError) as exc:
        print(f"    {what:<22} {system:<7} round {rnd}: FAILED {exc}", flush=True)
        b.runs.append({"scenario": what, "system": system, "round": rnd, "error": str(exc)[:500]})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one round, small N: a ~2 minute smoke run")
    ap.add_argument("--repeats", type=int, help="rounds (default 3, quick 1)")
    ap.add_argument("--systems", default="asynq," + ",".join(PEERS), help="comma-separated")
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated scenario groups: "
        "throughput,enqueue,latency,cluster,scale,backlog,memory,scheduled",
    )
    ap.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    ap.add_argument(
        "--save-as",
        default="",
        metavar="NAME",
        help="write this run only to benchmarks/results/NAME.json and NAME.txt (the printed table); "
        "latest.*, the chart and the docs' chart are left alone",
    )
    ap.add_argument(
        "--baseline",
        default="",
        help="a git revision: also run asynq-aio as of that commit (worker, enqueue and latency "
        "scenarios, interleaved), to show what the changes since then bought",
    )
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.repeats:
        plan = Plan(**{**plan.__dict__, "repeats": args.repeats})
    only = set(filter(None, args.only.split(",")))

    def want(group: str) -> bool:
        return not only or group in only

    systems = [s for s in args.systems.split(",") if s]
    unavailable: dict[str, str] = {}
    for s in systems:
        err = envs.ensure(envs.SYSTEMS[s.partition("@")[0]])
        if err:
            unavailable[s] = err
            print(f"!! {label_of(s)} not available: {err}")
    systems = [s for s in systems if s not in unavailable]
    versions = {s: envs.installed_version(s, envs.DISTS[s]) for s in systems}
    if args.baseline and "asynq" in systems:
        procs.BASELINE_SRC = export_tree(args.baseline)
        systems.insert(systems.index("asynq") + 1, "asynq@base")
        versions["asynq@base"] = args.baseline

    t_start = time.time()
    load_start = os.getloadavg()
    print(f"==> load average at start (1/5/15 min): {_load(load_start)}; {os.cpu_count()} CPUs")
    single = SingleRedis()
    cluster: ClusterRedis | None = None
    b = Bench(plan, systems, single, None)
    try:
        if want("cluster") or want("scale"):
            cluster = ClusterRedis()
            b.cluster = cluster
        print(
            f"==> Redis {single.version()} single on :{single.port}"
            + (f", cluster on {cluster.url.removeprefix('cluster://')}" if cluster else "")
        )
        print(f"==> systems: {', '.join(f'{s} {versions[s]}' for s in systems)}; {plan}")
        for rnd in range(plan.repeats):
            order = systems[rnd % len(systems) :] + systems[: rnd % len(systems)]
            print(f"==> round {rnd + 1}/{plan.repeats}, order {order}", flush=True)
            for s in order:
                if want("throughput"):
                    for handler in ("noop", "sleep") + (("pydantic",) if s.startswith("asynq") else ()):
                        scen = f"worker_{handler}"
                        _guard(
                            b,
                            scen,
                            s,
                            rnd,
                            worker_throughput,
                            b,
                            s,
                            rnd,
                            handler=handler,
                            url=single.url,
                            flush=single.flush,
                            scenario=scen,
                        )
                if want("enqueue") and s.partition("@")[0] in GO_PAIR:
                    _guard(b, "enqueue_serial", s, rnd, enqueue_serial, b, s, rnd)
                if want("enqueue") and s.partition("@")[0] in BATCHING:
                    _guard(b, "enqueue_many", s, rnd, enqueue_many, b, s, rnd)
                if want("latency"):
                    _guard(b, "latency", s, rnd, pickup_latency, b, s, rnd)
            if want("cluster") and cluster is not None:
                scen = "worker_noop_cluster"
                for cs in (x for x in order if x in GO_PAIR):
                    _guard(
                        b,
                        scen,
                        cs,
                        rnd,
                        worker_throughput,
                        b,
                        cs,
                        rnd,
                        handler="noop",
                        url=cluster.url,
                        flush=cluster.flush,
                        scenario=scen,
                    )
                    if want("enqueue"):
                        _guard(
                            b, "enqueue_serial_cluster", cs, rnd, enqueue_serial, b, cs, rnd, on_cluster=True
                        )
                    if want("latency"):
                        _guard(b, "latency_cluster", cs, rnd, pickup_latency, b, cs, rnd, on_cluster=True)
            if "asynq" not in systems:
                continue
            if want("scheduled"):
                _guard(b, "scheduled", "asynq", rnd, scheduled_start, b, rnd)
            if want("scale"):
                for k in plan.scale_procs:
                    _guard(b, f"scale_single_{k}", "asynq", rnd, scale, b, rnd, k, on_cluster=False)
                    if cluster is not None:
                        _guard(b, f"scale_cluster_{k}", "asynq", rnd, scale, b, rnd, k, on_cluster=True)
        if "asynq" in systems:
            if want("backlog"):
                for extra in (1_000, plan.backlog):
                    _guard(b, f"backlog_{extra}", "asynq", 0, backlog, b, 0, extra)
            if want("memory"):
                _guard(b, "memory", "asynq", 0, memory, b, 0)
    finally:
        redis_version = single.version()
        single.stop()
        if cluster is not None:
            cluster.stop()

    doc = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "quick": args.quick,
            "plan": plan.__dict__,
            "duration_s": round(time.time() - t_start, 1),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "redis": redis_version,
            "versions": versions,
            "unavailable": unavailable,
            # another asynq_aio tree than this checkout's (procs.Driver honours BENCH_ASYNQ_SRC)
            "asynq_src": os.environ.get("BENCH_ASYNQ_SRC", ""),
            "enqueue_conc": {s: ENQUEUE_CONC.get(s.partition("@")[0], DEFAULT_ENQUEUE_CONC) for s in systems},
            **({"go_config": GO_CONFIG} if "go" in systems else {}),
        },
        "summary": summarize(b.runs),
        "runs": b.runs,
    }
    print()
    table = render_table(doc)
    print(table)
    if args.save_as:
        RESULTS.mkdir(exist_ok=True)
        js, txt = RESULTS / f"{args.save_as}.json", RESULTS / f"{args.save_as}.txt"
        js.write_text(json.dumps(doc, indent=1))
        txt.write_text(table + "\n")
        print(f"\nwrote {js} and {txt}")
    elif not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "")
        text = json.dumps(doc, indent=1)
        (RESULTS / f"{stamp}.json").write_text(text)
        latest = "latest-quick" if args.quick else "latest"
        (RESULTS / f"{latest}.json").write_text(text)
        chart = subprocess.run(
            [
                str(envs.python_of("asynq")),
                "-m",
                "benchmarks.chart",
                str(RESULTS / f"{latest}.json"),
                str(RESULTS / f"{latest}.png"),
            ],
            cwd=envs.ROOT,
            env={**os.environ, "PYTHONPATH": str(envs.ROOT)},
            check=False,
        )
        if chart.returncode == 0 and not args.quick:
            # the docs page shows the latest full run (mkdocs serves only files under docs/)
            DOCS_CHART.parent.mkdir(exist_ok=True)
            shutil.copyfile(RESULTS / f"{latest}.png", DOCS_CHART)
        print(
            f"\nwrote {RESULTS / (stamp + '.json')}, {latest}.json"
            + (f", {latest}.png" if chart.returncode == 0 else " (chart failed)")
        )
    return 0


# -- summary and table -----------------------------------------------------------------------------


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """scenario -> system -> {metric: median over rounds, "rounds": k}; latencies pooled over rounds."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        if "error" not in r:
            groups.setdefault((r["scenario"], r["system"]), []).append(r)
    for (scen, sys_), rows in groups.items():
        agg: dict[str, Any] = {"rounds": len(rows)}
        if "latencies_ms" in rows[0]:
            pooled = [x for r in rows for x in r["latencies_ms"]]
            agg["p50_ms"] = pct(pooled, 50)
            agg["p99_ms"] = pct(pooled, 99)
            agg["samples"] = len(pooled)
        for k, v in rows[0].items():
            if k in ("scenario", "system", "round", "latencies_ms", "p50_ms", "p99_ms") or not isinstance(
                v, int | float
            ):
                continue
            agg[k] = statistics.median(float(r[k]) for r in rows)
        if "rate" in agg:
            agg["rate_min"] = min(float(r["rate"]) for r in rows)
            agg["rate_max"] = max(float(r["rate"]) for r in rows)
        out.setdefault(scen, {})[sys_] = agg
    return out


ROWS: list[tuple[str, str, str, str]] = [
    # label, scenario, metric, format
    ("worker, no-op handler (tasks/s)", "worker_noop", "rate", "{:,.0f}"),
    ("worker, handler sleeps 10 ms (tasks/s)", "worker_sleep", "rate", "{:,.0f}"),
    ("worker, pydantic payload (tasks/s)", "worker_pydantic", "rate", "{:,.0f}"),
    ("worker, no-op, cluster (tasks/s)", "worker_noop_cluster", "rate", "{:,.0f}"),
    ("enqueue, 64 concurrent callers, Go 16 (/s)", "enqueue_one", "rate", "{:,.0f}"),
    ("enqueue, one caller, one at a time (/s)", "enqueue_serial", "rate", "{:,.0f}"),
    ("enqueue, one caller: per call p50 (ms)", "enqueue_serial", "call_p50_ms", "{:.3f}"),
    ("enqueue, one caller: per call p99 (ms)", "enqueue_serial", "call_p99_ms", "{:.3f}"),
    ("enqueue batched (/s)", "enqueue_many", "rate", "{:,.0f}"),
    ("pick-up latency at idle, p50 (ms)", "latency", "p50_ms", "{:.2f}"),
    ("pick-up latency at idle, p99 (ms)", "latency", "p99_ms", "{:.2f}"),
    ("cluster: enqueue, 64 callers, Go 16 (/s)", "enqueue_one_cluster", "rate", "{:,.0f}"),
    ("cluster: enqueue, one caller (/s)", "enqueue_serial_cluster", "rate", "{:,.0f}"),
    ("cluster: one caller, per call p50 (ms)", "enqueue_serial_cluster", "call_p50_ms", "{:.3f}"),
    ("cluster: one caller, per call p99 (ms)", "enqueue_serial_cluster", "call_p99_ms", "{:.3f}"),
    ("cluster: pick-up latency, p50 (ms)", "latency_cluster", "p50_ms", "{:.2f}"),
    ("cluster: pick-up latency, p99 (ms)", "latency_cluster", "p99_ms", "{:.2f}"),
    ("scheduled task: start - T, p50 (ms)", "scheduled", "p50_ms", "{:.2f}"),
    ("scheduled task: start - T, p99 (ms)", "scheduled", "p99_ms", "{:.2f}"),
    ("worker RSS idle (MiB)", "latency", "rss_idle_mb", "{:.0f}"),
]


def render_table(doc: dict[str, Any]) -> str:
    """The medians as one table, then asynq-aio-only figures and the ratios within this run.

    Only what this run measured is printed: a system that could not be set up gets a "not
    available" column and a footnote saying why, never figures from elsewhere.
    """
    summary = doc["summary"]
    meta = doc["meta"]
    unavailable: dict[str, str] = meta["unavailable"]
    systems = list(meta["versions"]) + list(unavailable)
    head = ["", *(label_of(s) for s in systems)]
    lines: list[list[str]] = []
    for label, scen, metric, fmt in ROWS:
        row = [label]
        for s in systems:
            if s in unavailable:
                row.append("not available")
                continue
            v = summary.get(scen, {}).get(s, {}).get(metric)
            row.append(fmt.format(v) if v is not None else "-")
        if any(c not in ("-", "not available") for c in row[1:]):
            lines.append(row)
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    out = ["  ".join(h.ljust(widths[i]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(head))]
    out.append("  ".join("-" * w for w in widths))
    for r in lines:
        out.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    notes = [
        f"Medians of {meta['plan']['repeats']} interleaved rounds (latency percentiles over all rounds' "
        f"samples); load average (1/5/15 min) {_load(meta['loadavg_start'])} at start, "
        f"{_load(meta['loadavg_end'])} at end, {meta['cpus']} CPUs; Redis {meta['redis']}."
    ]
    for s, why in unavailable.items():
        notes.append(f"{label_of(s)}: not available in this run ({why}); no figure of it is shown.")
    if "go" in meta["versions"]:
        notes.append(f"Go Asynq {meta['versions']['go']}, measured in this run: {meta.get('go_config', '')}.")
    for note in notes:
        out += textwrap.wrap(note, 110, subsequent_indent="  ")
    extra = []
    for scen, agg in sorted(summary.items()):
        a = agg.get("asynq", {})
        if scen.startswith(("scale_", "backlog_")) and "rate" in a:
            more = ""
            if "redis_bytes_per_task" in a:
                more = f", Redis {a['redis_bytes_per_task']:.0f} B/pending task, fill {a['fill_rate']:,.0f}/s"
            extra.append(f"  {scen:<22} {a['rate']:>9,.0f} tasks/s{more}")
        if scen == "memory":
            extra.append(
                f"  worker RSS: idle {a['rss_idle_mb']:.0f} MiB, "
                f"{a['inflight']:,.0f} in flight {a['rss_inflight_mb']:.0f} MiB"
            )
    if extra:
        out.append("asynq-aio only (medians):")
        out += extra
    out += _go_ratios(summary)
    ratios = []
    for scen in ("worker_noop", "worker_sleep", "enqueue_one", "latency"):
        a = summary.get(scen, {}).get("asynq", {})
        metric = "p50_ms" if scen == "latency" else "rate"
        if metric not in a:
            continue
        for s in systems:
            p = summary.get(scen, {}).get(s, {})
            peer = s not in ("asynq", "go") and not s.startswith("asynq@")  # not a baseline
            if peer and metric in p and p[metric] and a[metric]:
                r = a[metric] / p[metric] if metric == "rate" else p[metric] / a[metric]
                ratios.append(f"{scen}: {r:.1f}x {label_of(s)}")
    if ratios:
        out.append("asynq-aio vs Python peers, same run (higher = asynq-aio better): " + "; ".join(ratios))
    return "\n".join(out)


def _go_ratios(summary: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """asynq-aio / Go Asynq for every table row both measured, as a plain quotient of the medians.

    One direction for every row, so a reader need not remember which rows were inverted: above 1 is
    better for asynq-aio on rates and worse on latencies and memory.
    """
    out = []
    for label, scen, metric, _fmt in ROWS:
        agg = summary.get(scen, {})
        a = agg.get("asynq", {}).get(metric)
        g = agg.get("go", {}).get(metric)
        if a is None or g is None or not g:
            continue
        out.append(f"  {label:<44} {a / g:>7.3g}")
    if not out:
        return []
    head = "asynq-aio / Go Asynq, same run (rates: > 1 = asynq-aio faster; ms, MiB: < 1 = asynq-aio lower):"
    return [head, *out]


if __name__ == "__main__":
    sys.exit(main())
