"""The worker of Asynq's "Redis Cluster" tutorial, in Python.

One handler per task type; each logs one line when it runs. Start it with the CLI, which configures
logging and shutdown on SIGINT/SIGTERM::

    asynq-aio worker examples.tutorial_worker:mux \\
        --cluster-addrs 127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002 \\
        --concurrency 20 --queue notifications=1 --queue webhooks=1 --queue images=1

or as a plain program, which builds the same ``Server`` in code (addresses from ASYNQ_CLUSTER_ADDRS)::

    python -m examples.tutorial_worker
"""

from __future__ import annotations

import asyncio
import logging
import os

from pydantic import BaseModel, ConfigDict, Field

from asynq_aio import Config, RedisClusterClientOpt, ServeMux, Server, Task

log = logging.getLogger(__name__)

DEFAULT_CLUSTER_ADDRS = ",".join(f"127.0.0.1:{port}" for port in range(7000, 7006))


def cluster_addrs() -> list[str]:
    """Seed addresses of the Redis Cluster: ASYNQ_CLUSTER_ADDRS, or the dev cluster on 7000-7005."""
    raw = os.environ.get("ASYNQ_CLUSTER_ADDRS") or DEFAULT_CLUSTER_ADDRS
    return [addr.strip() for addr in raw.split(",") if addr.strip()]


# -- payloads: the JSON a producer writes (Go or Python) --------------------------------------------


class EmailPayload(BaseModel):
    """``{"to": 123, "from": 456}``: ``from`` is a Python keyword, so the field is ``from_``."""

    model_config = ConfigDict(populate_by_name=True)  # EmailPayload(to=123, from_=456) works too

    to: int
    from_: int = Field(alias="from")


class ResizePayload(BaseModel):
    src_url: str


# -- handlers ---------------------------------------------------------------------------------------

mux = ServeMux()


@mux.task("notifications:email")
async def send_email(payload: EmailPayload) -> None:
    """A typed handler: the payload arrives validated (a bad payload is archived, not retried)."""
    log.info("Sending email to user %d from user %d", payload.to, payload.from_)


async def sync_webhook(task: Task) -> None:
    """A raw handler: it gets the Task (type, payload bytes, headers) and parses the payload itself."""
    data = task.json()["data"]
    log.info("Syncing webhook data: %s", data)


mux.handle_func("webhooks:sync", sync_webhook)


@mux.task("images:resize")
async def resize_image(payload: ResizePayload) -> None:
    log.info("Resizing image: %s", payload.src_url)


# -- running without the CLI ------------------------------------------------------------------------


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = Server(
        RedisClusterClientOpt(addrs=cluster_addrs()),
        Config(concurrency=20, queues={"notifications": 1, "webhooks": 1, "images": 1}),
    )
    asyncio.run(server.run(mux))


if __name__ == "__main__":
    main()
