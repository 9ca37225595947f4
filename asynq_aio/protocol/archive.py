"""Asynq's archive limits, applied by the worker's janitor and by the inspector's archive actions.

Asynq trims the archive only inside its archive script and leaves the trimmed tasks' hashes behind;
here the trim deletes the hashes too, so an archive stays bounded however its tasks got there.
"""

from __future__ import annotations

from datetime import timedelta

from asynq_aio.protocol import admin_scripts as scripts
from asynq_aio.protocol._redis.transport import Transport
from asynq_aio.protocol.keys import QueueKeys
from asynq_aio.protocol.replies import score_pairs

ARCHIVE_MAX = 10_000  # Asynq keeps the newest 10,000 archived tasks ...
ARCHIVE_TTL = timedelta(days=90)  # ... of the last 90 days
TRIM_BATCH = 100  # most task IDs one trim script call handles


async def trim_archive(transport: Transport, qk: QueueKeys, now: float) -> int:
    """Drop archived tasks older than 90 days or beyond the newest 10,000, hashes included;
    returns how many were dropped."""
    trimmed = 0
    cutoff = now - ARCHIVE_TTL.total_seconds()
    while True:
        excess = int(await transport.call("ZCARD", qk.archived)) - ARCHIVE_MAX
        pairs = await transport.call("ZRANGE", qk.archived, 0, TRIM_BATCH - 1, "WITHSCORES")
        ids = [m for rank, (m, score) in enumerate(score_pairs(pairs)) if score < cutoff or rank < excess]
        if not ids:
            return trimmed
        n = int(
            await transport.script(
                scripts.TRIM_ARCHIVED,
                [qk.archived, *(qk.task(i) for i in ids)],
                [int(cutoff), ARCHIVE_MAX, *ids],
            )
        )
        trimmed += n
        if n < TRIM_BATCH:
            return trimmed
