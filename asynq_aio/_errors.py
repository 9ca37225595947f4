"""Every exception asynq-aio raises on purpose, in one place so callers can catch by kind."""

from __future__ import annotations


class AsynqError(Exception):
    """Base class of asynq-aio's own errors."""


class InvalidQueueName(AsynqError, ValueError):
    """A queue name that would break the ``{queue}`` hash tag or is empty."""


class InvalidTaskError(AsynqError, ValueError):
    """A task that cannot be stored: empty type, payload over the limit, bad option."""


class PayloadTooLargeError(InvalidTaskError):
    """A payload over the configured size limit (``Client(max_payload_bytes=...)``, or the
    worker's ``Config.max_payload_bytes``, where the task is archived with this error's text)."""


class TaskIDConflictError(AsynqError):
    """A task with the requested ID already exists in the queue (in any state)."""


class DuplicateTaskError(AsynqError):
    """The unique lock for this task type and payload is held by another task."""


class TaskNotFoundError(AsynqError):
    """No task with this ID exists in the queue."""


class QueueNotFoundError(AsynqError):
    """The queue is not known to Redis (not in ``asynq:queues``)."""


class FailedPreconditionError(AsynqError):
    """The operation does not apply to the task or queue as it is now (e.g. deleting an active task,
    removing a non-empty queue without force)."""


class RedisUnavailableError(AsynqError, ConnectionError):
    """Redis could not be reached (or stayed unavailable) within the retry budget; names the address."""


class RedisAuthError(AsynqError, PermissionError):
    """Redis refused the credentials (wrong username or password, disabled ACL user) or the ACL
    user lacks a permission asynq-aio needs (NOPERM); names the address. Not retried: waiting
    does not fix a password."""


class RedisConfigError(AsynqError):
    """The connection options name the wrong kind of Redis: a single-node URL pointed at a Redis
    Cluster node, or cluster options pointed at a standalone Redis. Raised on the first call and
    never retried, because no amount of waiting turns one kind into the other; names the address
    and the option to use instead."""


class ClusterNotReadyError(AsynqError):
    """The Redis Cluster does not report ``cluster_state:ok``."""


class MalformedTaskError(AsynqError):
    """A stored task record that cannot be decoded (a buggy producer wrote it)."""


class HandlerNotFoundError(AsynqError):
    """No handler is registered for the task's type; the attempt fails and is retried."""


class SkipRetry(AsynqError):
    """Raise from a handler to archive the task now instead of retrying it."""


class RevokeTask(AsynqError):
    """Raise from a handler to drop the task: neither retried nor archived."""


class PayloadValidationError(AsynqError):
    """The payload does not match the handler's pydantic model; the task is archived, never retried."""


class TaskTimeoutError(AsynqError, TimeoutError):
    """The handler ran past the task's timeout or deadline and was cancelled."""


class TaskCanceledError(AsynqError):
    """The task was cancelled through ``asynq:cancel`` while it ran."""


class LeaseExpiredError(AsynqError):
    """The task's lease expired (its worker died or stalled); another server recovered it."""


class NotDurableError(AsynqError):
    """A durable enqueue (``Client(durable=...)``) stored the task on the master, but fewer replicas
    than asked confirmed it within the timeout.

    The task IS stored and will run, unless that master fails before replicating it; then it is
    lost. ``info`` is the stored task (``infos`` for ``enqueue_many``), ``acked``/``wanted`` the
    replica counts. Enqueueing it again under the same ``task_id`` is safe: it conflicts while the
    first copy exists.
    """

    def __init__(self, message: str, *, info: object, acked: int, wanted: int) -> None:
        super().__init__(message)
        self.info = info
        self.acked = acked
        self.wanted = wanted


class TaskFailedError(AsynqError):
    """The task a caller waited for was archived: it will not run again. Carries its last error."""

    def __init__(self, message: str, *, last_error: str = "") -> None:
        super().__init__(message)
        self.last_error = last_error
