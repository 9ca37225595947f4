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
from asynq_aio.protocol.broker import Dequeued, Limited, LimitRule, MalformedRecord, Op, Paused
from asynq_aio.protocol.codec import ServerRecord, WorkerRecord


class WorkerBroker(Protocol):
    """The worker side of a broker: take tasks, report outcomes, keep leases and the queues tidy."""

    clock: Callable[[], float]

    # -- taking work ----------------------------------------------------------------------------------

    async def dequeue(self, queue: str, count: int, lease_until: float) -> list[Dequeued] | Paused:
        """Up to ``count`` tasks moved to active, leased until ``lease_until`` (unix s); PAUSED if paused."""

    async def dequeue_limited(
        self, queue: str, count: int, lease_until: float, rules: Sequence[LimitRule]
    ) -> list[Dequeued] | Paused | Limited:
        """As :meth:`dequeue`, taking only tasks every rule allows now; Limited when tasks wait but none
        may start yet (they stay pending)."""

    async def wait_for_work(self, queue: str, timeout: float) -> bool:
        """Block until ``queue`` has a pending task: True, or False after ``timeout`` seconds."""

    async def is_paused(self, queue: str) -> bool:
        """Whether an operator paused ``queue`` (a paused queue hands out no tasks)."""

    async def all_queues(self) -> list[str]:
        """The queues that exist (``asynq:queues``, which every producer adds to): what queue patterns
        are matched against."""

    # -- outcomes (ops, run in batches) ---------------------------------------------------------------

    def ack_op(self, msg: TaskMessage, *, attempt: str = "", now: float | None = None) -> Op:
        """Op for a success: delete, or keep as completed; replies 0 if ``attempt`` no longer owns it."""

    def ack_many_op(
        self,
        queue: str,
        msgs: Sequence[TaskMessage],
        *,
        attempts: Sequence[str] | None = None,
        now: float | None = None,
    ) -> Op:
        """Op acking many tasks of ``queue`` in one call: one reply per task, 1 acked, 0 not."""

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
    ) -> Op:
        """Op for a failed attempt (retry at ``retry_at`` or archive); replies 0 when it did nothing."""

    def requeue_op(self, queue: str, task_id: str, *, attempt: str = "") -> Op:
        """Op putting an active task back at the head of pending; replies 0 if no longer owned."""

    def archive_malformed_op(
        self, record: MalformedRecord, *, only_if_lease_expired_by: float = 0, attempt: str = ""
    ) -> Op:
        """Op archiving an undecodable record under a placeholder message holding its bytes."""

    async def run(self, ops: Sequence[Op]) -> list[Any]:
        """Send ops in one batch: one reply per op, in order, a failed op's exception in its slot."""

    async def write_result(self, queue: str, task_id: str, data: bytes, *, attempt: str = "") -> bool:
        """Store a handler's result while ``attempt`` owns the task; False when not written."""

    # -- leases and recovery --------------------------------------------------------------------------

    async def extend_leases(self, queue: str, attempts: Sequence[tuple[str, str]], until: float) -> list[str]:
        """Extend the leases to ``until`` (unix s); returns IDs whose lease this attempt no longer owns."""

    async def expired_leases(
        self, queue: str, cutoff: float, *, limit: int = 100
    ) -> list[TaskMessage | MalformedRecord]:
        """Active tasks whose lease ran out before ``cutoff``; undecodable ones as MalformedRecord."""

    async def heal_orphans(self, queue: str, *, limit: int = 1000) -> int:
        """Requeue IDs in active that have no lease; returns how many were requeued."""

    async def sample_states(
        self, queue: str, where: str, start: int, count: int
    ) -> list[tuple[str, str | None]]:
        """A window of the ``where`` list's IDs with each hash's state (None: the hash is gone)."""

    async def fix_states(self, queue: str, found: Sequence[tuple[str, str]]) -> list[int]:
        """Reconcile each (ID, where seen) whose hash disagreed; one code per item (0 = nothing done)."""

    # -- scheduled tasks and cleanup ------------------------------------------------------------------

    async def forward(self, queue: str, *, batch: int = 100) -> int:
        """Move due scheduled and retry tasks to pending or their group; returns how many moved."""

    async def next_dues(self, queues: Sequence[str]) -> list[float | Exception | None]:
        """Each queue's earliest score in scheduled or retry (unix s; None when both are empty), in
        one batch; a queue whose read failed has the error in its place."""

    async def holds_tasks(self, queues: Sequence[str]) -> list[bool | Exception]:
        """Whether each queue has an ID in active or a lease (what the recoverer looks at), in one
        batch; a queue whose read failed has the error in its place."""

    async def nodes_of(self, queues: Sequence[str]) -> list[str]:
        """The node holding each queue's keys ("" on a single Redis): what a background round groups
        its batches by, so a stalled node holds up only its own queues."""

    async def needs_cleanup(self, queues: Sequence[str]) -> list[bool | Exception]:
        """Whether each queue has completed tasks past their retention or an archive beyond Asynq's
        limits, in one batch; a queue whose read failed has the error in its place."""

    async def delete_expired_completed(self, queue: str, *, batch: int = 500) -> int:
        """Delete completed tasks whose retention has passed; returns how many."""

    async def trim_archive(self, queue: str) -> int:
        """Apply Asynq's archive limits (90 days, newest 10,000); returns how many were dropped."""

    # -- the server's own records ---------------------------------------------------------------------

    async def write_server_state(
        self, server: ServerRecord, workers: Sequence[WorkerRecord], ttl: float
    ) -> None:
        """Write the heartbeat record and running tasks, expiring after ``ttl`` seconds."""

    async def clear_server_state(self, server: ServerRecord) -> None:
        """Remove this server's heartbeat record and worker list (a clean shutdown)."""

    async def prune_dead_servers(self, *, grace: float = 60.0) -> int:
        """Drop index entries of servers dead over ``grace`` seconds; returns how many."""
