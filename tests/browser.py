"""Helpers for the dashboard's browser tests: Debian's Chromium driven by Playwright (no browser
download), and an ASGI app served by uvicorn on a free loopback port in a background thread."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import uvicorn
from playwright.async_api import Browser, async_playwright
from starlette.types import ASGIApp

from asynq_aio._devcluster import find_free_port_base

__all__ = ["CHROMIUM", "chromium", "serve"]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _chromium_installed() -> bool:
    return os.path.exists(CHROMIUM)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium; fails loudly (never skips) when the binary is missing."""
    if not _chromium_installed():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@contextmanager
def serve(app: ASGIApp, *, timeout: float = 15.0) -> Iterator[str]:
    """Run ``app`` with uvicorn (lifespan on) in a thread; yields its base URL, stops it afterwards."""
    port = find_free_port_base(1)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port} within {timeout:.0f}s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
