"""What the server's components need from storage: the seam between server/ and protocol/.

Every component (processor, acker, heartbeat, forwarder, recoverer, janitor) is typed against
:class:`WorkerBroker`, not the Redis-backed ``protocol.broker.Broker``, so each can be driven in a
test by an in-memory implementation that injects faults (tests/testbroker.py), in milliseconds and
without Redis, beside the real-Redis tests. Outcome methods return ops rather than writing at once:
the acker and the recoverer batch many outcomes into one round trip with :meth:`run`; an op is
opaque here, only the broker that made it knows how to run it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from asynq_aio.protocol.asynq_pb2 import TaskMessage
from asynq_aio.protocol.broker import Dequeued, MalformedRecord, Paused
from asynq_aio.protocol.codec import ServerRecord, WorkerRecord
from asynq_aio.transport import Op


class WorkerBroker(Protocol):
    """The worker side of a broker: take tasks, report outcomes, keep leases and the queues tidy."""

    clock: Callable[[], float]

    # -- taking work ----------------------------------------------------------------------------------

    async def dequeue(self, queue: str, count: int, lease_until: float) -> list[Dequeued] | Paused: ...

    async def wait_for_work(self, queue: str, timeout: float) -> bool: ...

    async def is_paused(self, queue: str) -> bool: ...

    # -- outcomes (ops, run in batches) ---------------------------------------------------------------

    def ack_op(self, msg: TaskMessage, *, attempt: str = "", now: float | None = None) -> Op: ...

    def ack_many_op(
        self,
        queue: str,
        msgs: Sequence[TaskMessage],
        *,
        attempts: Sequence[str] | None = None,
        now: float | None = None,
    ) -> Op: ...

    def fail_op(
        self,
        msg: TaskMessage,
        *,
        error: str,
        archive: bool,
        retry_at: float = 0,
        is_failure: bool = True,
        only_if_lease_expired_by: float = 0,
        attempt: str = "",
        now: float | None = None,
    ) -> Op: ...

    def requeue_op(self, queue: str, task_id: str, *, attempt: str = "") -> Op: ...

    def archive_malformed_op(
        self, record: MalformedRecord, *, only_if_lease_expired_by: float = 0, attempt: str = ""
    ) -> Op: ...

    async def run(self, ops: Sequence[Op]) -> list[Any]: ...

    async def write_result(self, queue: str, task_id: str, data: bytes, *, attempt: str = "") -> bool: ...

    # -- leases and recovery --------------------------------------------------------------------------

    async def extend_leases(
        self, queue: str, attempts: Sequence[tuple[str, str]], until: float
    ) -> list[str]: ...

    async def expired_leases(
        self, queue: str, cutoff: float, *, limit: int = 100
    ) -> list[TaskMessage | MalformedRecord]: ...

    async def heal_orphans(self, queue: str, *, limit: int = 1000) -> int: ...

    async def sample_states(
        self, queue: str, where: str, start: int, count: int
    ) -> list[tuple[str, str | None]]: ...

    async def fix_states(self, queue: str, found: Sequence[tuple[str, str]]) -> list[int]: ...

    # -- scheduled tasks and cleanup ------------------------------------------------------------------

    async def forward(self, queue: str, *, batch: int = 100) -> int: ...

    async def next_due(self, queue: str) -> float | None: ...

    async def delete_expired_completed(self, queue: str, *, batch: int = 500) -> int: ...

    async def trim_archive(self, queue: str) -> int: ...

    # -- the server's own records ---------------------------------------------------------------------

    async def write_server_state(
        self, server: ServerRecord, workers: Sequence[WorkerRecord], ttl: float
    ) -> None: ...

    async def clear_server_state(self, server: ServerRecord) -> None: ...

    async def prune_dead_servers(self, *, grace: float = 60.0) -> int: ...
