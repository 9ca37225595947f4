"""The dashboard in a real browser (Playwright driving Debian's Chromium) against real Redis.

On the cluster: a real Server leaves tasks in every state (retry, archived, completed from handler
outcomes; one handler left running so that the queue's one worker slot is taken and pending tasks
stay pending), a real Scheduler publishes an entry, and the dashboard is mounted at /asynq in a
FastAPI app served by uvicorn. Every page is loaded and every kind of action is clicked through
its confirm step; Redis is checked afterwards through the Inspector. On a single Redis, the
``asynq-aio web --read-only`` command is started as a process and shows pages without actions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from browser import chromium, serve
from conftest import RunningCluster
from fastapi import FastAPI
from playwright.async_api import Page, expect
from workerproc import wait_until

from asynq_aio import (
    Client,
    Config,
    Inspector,
    RedisClusterClientOpt,
    Scheduler,
    ServeMux,
    Server,
    SkipRetry,
    Task,
    TaskState,
    parse_redis_url,
)
from asynq_aio._connection import RedisConnOpt
from asynq_aio._devcluster import find_free_port_base
from asynq_aio.web import create_app

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = str(Path(__file__).resolve().parent.parent)
WAIT = 10_000  # ms: generous bound for one step (live refresh runs every second here)


def mux_for_every_state() -> ServeMux:
    mux = ServeMux()

    async def fail(task: Task) -> None:
        raise RuntimeError("boom: upstream said 503")

    async def dead(task: Task) -> None:
        raise SkipRetry("bad record")

    async def ok(task: Task) -> dict[str, Any]:
        return {"resized": True}

    async def block(task: Task) -> None:
        await anyio.sleep_forever()

    for name, fn in (("t:fail", fail), ("t:dead", dead), ("t:ok", ok), ("t:block", block)):
        mux.handle_func(name, fn)
    return mux


async def state_of(insp: Inspector, queue: str, task_id: str) -> TaskState:
    return (await insp.get_task_info(queue, task_id)).state


async def wait_state(insp: Inspector, queue: str, task_id: str, state: TaskState) -> None:
    async def reached() -> bool:
        return await state_of(insp, queue, task_id) is state

    await wait_until(reached, timeout=15)


@asynccontextmanager
async def fleet(opt: RedisConnOpt, queue: str) -> AsyncIterator[dict[str, Any]]:
    """A Server and a Scheduler on ``queue`` with tasks in every state; yields their IDs."""
    config = Config(
        queues={queue: 1},
        concurrency=1,
        retry_delay_func=lambda n, e, t: 3600.0,
        heartbeat_interval=1.0,
        shutdown_timeout=1.0,
    )
    sched = Scheduler(opt)
    entry = sched.register("@every 1s", Task("t:tick", {"every": "1s"}), queue=queue + "_cron")
    async with (
        Client(opt) as client,
        Inspector(opt) as insp,
        Server(opt, config).serve(mux_for_every_state()),
        sched.serve(),
    ):
        ids: dict[str, Any] = {"entry": entry}
        for kind, state, max_retry, retention in (
            ("fail", TaskState.RETRY, 3, None),
            ("dead", TaskState.ARCHIVED, None, None),
            ("ok", TaskState.COMPLETED, None, 600),
            ("block", TaskState.ACTIVE, None, None),
        ):
            tid = f"{kind}-{uuid.uuid4().hex[:8]}"
            task = Task(f"t:{kind}", {"kind": kind})
            await client.enqueue(task, queue=queue, task_id=tid, max_retry=max_retry, retention=retention)
            await wait_state(insp, queue, tid, state)
            ids[kind] = tid
        # the only worker slot is busy: these stay where they are
        ids["pending"] = [f"p{i}-{uuid.uuid4().hex[:8]}" for i in range(3)]
        for tid in ids["pending"]:
            await client.enqueue(
                Task("t:pending", {"n": tid, "nested": {"a": [1, 2]}}), queue=queue, task_id=tid
            )
        ids["scheduled"] = [f"s{i}-{uuid.uuid4().hex[:8]}" for i in range(2)]
        for i, tid in enumerate(ids["scheduled"]):
            await client.enqueue(
                Task("t:later", b"plain text"), queue=queue, task_id=tid, process_in=3600 + i
            )
        ids["aggregating"] = [f"g{i}-{uuid.uuid4().hex[:8]}" for i in range(2)]
        for tid in ids["aggregating"]:
            await client.enqueue(Task("t:agg", {"n": 1}), queue=queue, task_id=tid, group="digest")
        ids["client"], ids["insp"] = client, insp
        yield ids


def host_app(opt: RedisConnOpt) -> FastAPI:
    """A FastAPI app with the dashboard mounted at /asynq; its lifespan runs the dashboard's."""
    dashboard = create_app(opt, refresh_seconds=1.0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with dashboard.router.lifespan_context(dashboard):
            yield

    host = FastAPI(lifespan=lifespan)
    host.mount("/asynq", dashboard)
    return host


async def confirm(page: Page) -> str:
    """Press Confirm on the confirm step; returns the result message."""
    await expect(page.get_by_role("heading", name="Confirm")).to_be_visible()
    await page.get_by_role("button", name="Confirm").click()
    status = page.get_by_role("status")
    await expect(status).to_be_visible()
    return await status.inner_text()


async def row_ids(page: Page) -> list[str]:
    return [await a.inner_text() for a in await page.locator("table.tasks tbody tr td a code").all()]


async def test_every_page_and_action_in_a_browser_on_the_cluster(redis_cluster: RunningCluster) -> None:
    opt = RedisClusterClientOpt(addrs=redis_cluster.addrs)
    queue = f"web_{uuid.uuid4().hex[:6]}"
    with anyio.fail_after(120):
        async with fleet(opt, queue) as ids, chromium() as browser:
            insp: Inspector = ids["insp"]
            client: Client = ids["client"]
            with serve(host_app(opt)) as url:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                await page.goto(f"{url}/asynq/")
                row = page.locator(f'tr[data-queue="{queue}"]')
                await expect(row.locator('[data-live="pending"]')).to_have_text("3")
                await expect(row.locator('[data-live="active"]')).to_have_text("1")
                await expect(row.locator('[data-live="aggregating"]')).to_have_text("2")
                await expect(page.locator("svg.chart")).to_be_visible()

                # live: a new task shows up without a reload
                await page.evaluate("window.__sameDocument = true")
                await client.enqueue(Task("t:pending", {"n": "late"}), queue=queue, task_id=f"late-{queue}")
                ids["pending"].append(f"late-{queue}")
                await expect(row.locator('[data-live="pending"]')).to_have_text("4", timeout=WAIT)
                assert await page.evaluate("window.__sameDocument") is True

                # each state's tab lists exactly that state's tasks
                await row.get_by_role("link", name=queue).click()
                await expect(page.get_by_role("heading", name=f"Queue {queue}")).to_be_visible()
                tabs = page.get_by_role("navigation", name="Task states")
                for state, expected in (
                    ("Active", [ids["block"]]),
                    ("Pending", ids["pending"]),
                    ("Scheduled", ids["scheduled"]),
                    ("Retry", [ids["fail"]]),
                    ("Archived", [ids["dead"]]),
                    ("Completed", [ids["ok"]]),
                    ("Aggregating", ids["aggregating"]),
                ):
                    await tabs.get_by_role("link", name=state).click()
                    await expect(page.get_by_role("heading", name=f"{state} tasks")).to_be_visible()
                    assert await row_ids(page) == expected, state
                await expect(page.get_by_role("link", name="digest")).to_be_visible()

                # a task's page: pretty JSON payload, last error, result
                await page.goto(f"{url}/asynq/queue?q={queue}&state=retry")
                await page.get_by_role("link", name=ids["fail"]).click()
                await expect(page.locator("pre.err")).to_contain_text("boom: upstream said 503")
                await page.goto(f"{url}/asynq/queue?q={queue}&state=completed")
                await page.get_by_role("link", name=ids["ok"]).click()
                await expect(page.locator("pre.payload").last).to_contain_text('"resized": true')

                # search by ID from the header
                await page.get_by_role("searchbox", name="Task ID").fill(ids["pending"][0])
                await page.get_by_role("button", name="Find", exact=True).click()
                await expect(page.get_by_role("heading", name=f"Task {ids['pending'][0]}")).to_be_visible()
                await expect(page.locator("pre.payload")).to_contain_text('"nested": {\n    "a": [')

                # servers, scheduler and its history, Redis
                await page.get_by_role("link", name="Servers").click()
                await expect(page.get_by_role("link", name=ids["block"])).to_be_visible()
                await expect(page.get_by_text("1 of 1")).to_be_visible()
                await (
                    page.get_by_role("navigation", name="Sections")
                    .get_by_role("link", name="Scheduler")
                    .click()
                )
                entry_row = page.locator("tr", has=page.get_by_role("link", name=queue + "_cron"))
                await expect(entry_row).to_contain_text("@every 1s")

                async def fired() -> bool:
                    return bool(await insp.list_scheduler_enqueue_events(ids["entry"]))

                await wait_until(fired, timeout=10)
                await entry_row.get_by_role("link", name="Enqueues").click()
                await expect(page.locator("table.tasks tbody tr").first).to_be_visible()
                await page.get_by_role("link", name="Redis").click()
                (loc,) = await insp.cluster_locations([queue])
                qrow = page.locator(
                    "table.locations tr", has=page.get_by_role("link", name=queue, exact=True)
                )
                await expect(qrow).to_contain_text(str(loc.slot))
                await expect(qrow).to_contain_text(f"{loc.nodes[0].addr} master")

                # actions, each through its confirm step
                await page.goto(f"{url}/asynq/queue?q={queue}&state=pending")
                first = page.locator("tr", has=page.get_by_role("link", name=ids["pending"][0]))
                await first.get_by_role("button", name="Archive").click()
                assert "archived" in await confirm(page)
                assert await state_of(insp, queue, ids["pending"][0]) is TaskState.ARCHIVED

                await page.goto(f"{url}/asynq/queue?q={queue}&state=scheduled")
                for tid in ids["scheduled"]:
                    await page.get_by_role("checkbox", name=f"Select task {tid}").check()
                await page.get_by_role("button", name="Run selected").click()
                assert "2 of 2 selected task(s) moved to pending" in await confirm(page)
                for tid in ids["scheduled"]:
                    assert await state_of(insp, queue, tid) is TaskState.PENDING

                await page.goto(f"{url}/asynq/queue?q={queue}&state=archived")
                await page.get_by_role("button", name="Delete all 2").click()
                await expect(page.get_by_text("Delete every archived task")).to_be_visible()
                assert "2 archived task(s) deleted" in await confirm(page)
                assert (await insp.get_queue_info(queue)).archived == 0

                await page.goto(f"{url}/asynq/task?q={queue}&id={ids['fail']}")
                await page.get_by_role("button", name="Run").click()
                assert "moved to pending" in await confirm(page)
                assert await state_of(insp, queue, ids["fail"]) is TaskState.PENDING

                await page.goto(f"{url}/asynq/queue?q={queue}&state=aggregating&group=digest")
                await page.get_by_role("button", name="Delete all 2").click()
                assert "2 aggregating task(s) deleted" in await confirm(page)
                assert await insp.groups(queue) == []

                await page.goto(f"{url}/asynq/queue?q={queue}")
                await page.get_by_role("button", name="Pause queue").click()
                assert "paused" in await confirm(page)
                assert (await insp.get_queue_info(queue)).paused is True
                await page.get_by_role("link", name=f"Back to queue {queue}").click()
                await expect(page.locator(".heading .badge")).to_have_text("paused")
                await page.get_by_role("button", name="Unpause queue").click()
                await page.get_by_role("link", name="Cancel").click()  # the confirm step's way out
                assert (await insp.get_queue_info(queue)).paused is True
                await page.get_by_role("button", name="Unpause queue").click()
                assert "unpaused" in await confirm(page)
                assert (await insp.get_queue_info(queue)).paused is False

                # last (it frees the worker slot): cancel the running task
                await page.goto(f"{url}/asynq/queue?q={queue}&state=active")
                await page.get_by_role("button", name="Cancel run").click()
                assert "Sent the cancel signal" in await confirm(page)
                await wait_state(insp, queue, ids["block"], TaskState.RETRY)  # a cancelled run is retried

                # a phone: nothing wider than the screen but the scrolling tables
                phone = await browser.new_page(viewport={"width": 390, "height": 844})
                for path in ("/asynq/", f"/asynq/queue?q={queue}&state=pending", "/asynq/servers"):
                    await phone.goto(url + path)
                    width = await phone.evaluate("document.documentElement.scrollWidth")
                    assert width <= 390, (path, width)
                # every form control has a name a screen reader can read
                unnamed = await page.evaluate(
                    """() => [...document.querySelectorAll('input:not([type=hidden]), button')]
                        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                                      && !el.textContent.trim()).length"""
                )
                assert unnamed == 0
                assert errors == []


async def test_the_web_command_serves_read_only_pages(
    single_redis_url: str, unique_queue: str, tmp_path: Path
) -> None:
    opt = parse_redis_url(single_redis_url)
    async with Client(opt) as client:
        tid = f"ro-{uuid.uuid4().hex[:8]}"
        await client.enqueue(
            Task("t:ro", {"hello": "world"}), queue=unique_queue, task_id=tid, process_in=600
        )
    port = find_free_port_base(1)
    cmd = [sys.executable, "-m", "asynq_aio.cli", "web", "--redis-url", single_redis_url]
    cmd += ["--port", str(port), "--read-only", "--root-path", "/asynq"]  # a proxy strips /asynq
    env = {**os.environ, "PYTHONPATH": ROOT}
    log = tmp_path / "web.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"

        async def up() -> bool:
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(base + "/api/stats")).status_code == 200
            except httpx.HTTPError:
                assert proc.poll() is None, log.read_text()
                return False

        await wait_until(up, timeout=20)
        async with chromium() as browser:
            page = await browser.new_page()
            await page.goto(f"{base}/queue?q={unique_queue}&state=scheduled")
            await expect(page.get_by_role("link", name=tid)).to_be_visible()
            await expect(page.get_by_role("button")).to_have_count(1)  # the header's Find, no actions
            await expect(page.get_by_text("Read-only.")).to_be_visible()
            hrefs = await page.eval_on_selector_all(
                "a[href^='/']", "els => els.map(e => e.getAttribute('href'))"
            )
            assert hrefs and all(h.startswith("/asynq/") for h in hrefs), hrefs
            status = await page.evaluate(
                """async () => (await fetch('/action', {method: 'POST', body: 'op=pause&target=queue&q=x',
                    headers: {'content-type': 'application/x-www-form-urlencoded'}})).status"""
            )
            assert status == 403
        assert "asynq-aio dashboard (read-only)" in log.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    async with Inspector(opt) as insp:
        assert (await insp.get_queue_info(unique_queue)).paused is False
