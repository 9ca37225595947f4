"""Take the dashboard screenshots in docs/img/ (dashboard-*.png) with Playwright and Chromium.

Starts a throwaway 6-node Redis Cluster, fills a few queues with tasks in every state through a real
Server (handlers that succeed, fail, give up and one that keeps running), a real Scheduler entry,
then serves the dashboard with uvicorn and captures the main pages at 1280 px wide (and one page at
a phone's 390 px).

    .venv/bin/python scripts/dashboard_screenshots.py
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from playwright.async_api import async_playwright

from asynq_aio import Client, Config, Inspector, Scheduler, ServeMux, Server, SkipRetry, Task
from asynq_aio._devcluster import find_free_port_base
from asynq_aio.testing import local_cluster
from asynq_aio.web import create_app

OUT = Path(__file__).resolve().parent.parent / "docs" / "img"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def mux() -> ServeMux:
    m = ServeMux()

    async def resize(task: Task) -> dict[str, Any]:
        if task.json()["w"] % 7 == 0:
            raise RuntimeError("upstream image server answered 503")
        return {"stored": f"s3://thumbs/{task.json()['id']}.jpg"}

    async def email(task: Task) -> None:
        raise SkipRetry("mailbox does not exist")

    async def report(task: Task) -> None:
        await anyio.sleep_forever()

    m.handle_func("images:resize", resize)
    m.handle_func("email:send", email)
    m.handle_func("reports:build", report)
    return m


async def populate(opt: Any) -> None:
    async with Client(opt) as client, Inspector(opt) as insp:
        for i in range(1, 41):
            await client.enqueue(
                Task("images:resize", {"id": f"img-{i}", "w": i * 10, "src": f"https://example.com/{i}.jpg"}),
                queue="images", max_retry=5, retention=3600,
            )  # fmt: skip
        for i in range(3):
            await client.enqueue(Task("email:send", {"to": f"user{i}@example.com"}), queue="notifications")
        await client.enqueue(Task("reports:build", {"month": "2026-11"}), queue="reports")

        async def settled() -> bool:
            infos = {i.queue: i for i in await insp.get_queue_infos()}
            return (
                infos["images"].pending == 0
                and infos["reports"].active == 1
                and (infos["notifications"].archived == 3)
            )

        for _ in range(600):  # up to two minutes
            if await settled():
                break
            await anyio.sleep(0.2)
        for i in range(12):
            await client.enqueue(Task("images:resize", {"id": f"later-{i}", "w": 320}), queue="images",
                                 process_in=600 + 60 * i)  # fmt: skip
        for i in range(25):
            await client.enqueue(Task("reports:build", {"month": f"2025-{i % 12 + 1:02d}"}), queue="reports")
        for i in range(4):
            await client.enqueue(Task("email:digest-item", {"n": i}), queue="notifications", group="user:42")


async def shoot(url: str) -> None:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 860})
        async with Inspector(opt_global) as insp:
            retry = (await insp.list_retry_tasks("images"))[0]
        shots = {
            "overview": "/",
            "queue": "/queue?q=images&state=retry",
            "task": f"/task?q=images&id={retry.id}",
            "servers": "/servers",
            "redis": "/redis",
            "scheduler": "/scheduler",
        }
        for name, path in shots.items():
            await page.goto(url + path)
            await page.screenshot(path=str(OUT / f"dashboard-{name}.png"), full_page=True)
        phone = await browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1)
        await phone.goto(url + "/queue?q=reports&state=pending")
        await phone.screenshot(path=str(OUT / "dashboard-phone.png"))
        await browser.close()


opt_global: Any = None


async def main() -> None:
    global opt_global
    OUT.mkdir(parents=True, exist_ok=True)
    with local_cluster() as cluster:
        opt = opt_global = cluster.opt
        config = Config(
            queues={"images": 3, "notifications": 2, "reports": 1},
            concurrency=2,
            retry_delay_func=lambda n, e, t: 1800.0,
            heartbeat_interval=1.0,
            shutdown_timeout=1.0,
        )
        sched = Scheduler(opt)
        sched.register("*/15 * * * *", Task("reports:refresh", {"scope": "daily"}), queue="reports")
        sched.register("@every 1h", Task("images:cleanup"), queue="images")
        async with Server(opt, config).serve(mux()), sched.serve():
            await populate(opt)
            port = find_free_port_base(1)
            server = uvicorn.Server(
                uvicorn.Config(create_app(opt), host="127.0.0.1", port=port, log_level="warning")
            )
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            for _ in range(400):  # up to 20 s
                if server.started:
                    break
                await anyio.sleep(0.05)
            try:
                await shoot(f"http://127.0.0.1:{port}")
            finally:
                server.should_exit = True
                thread.join(10)
    sys.stdout.write(f"wrote {', '.join(sorted(p.name for p in OUT.glob('dashboard-*.png')))}\n")


if __name__ == "__main__":
    asyncio.run(main())
