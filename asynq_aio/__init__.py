"""asynq-aio: an asyncio-native task queue on Redis Cluster, wire-compatible with Go Asynq v0.26."""

from asynq_aio.application import App
from asynq_aio.client import Client, Durability, EnqueueHook, OutgoingTask
from asynq_aio.connection import (
    RedisClientOpt,
    RedisClusterClientOpt,
    RedisSentinelOpt,
    TLSOptions,
    parse_redis_url,
)
from asynq_aio.context import TaskContext, current_task
from asynq_aio.default_client import NoDefaultClientError, use_client
from asynq_aio.errors import (
    AsynqError,
    ClusterNotReadyError,
    DuplicateTaskError,
    FailedPreconditionError,
    HandlerNotFoundError,
    InvalidQueueName,
    InvalidTaskError,
    MalformedTaskError,
    NotDurableError,
    PayloadTooLargeError,
    PayloadValidationError,
    QueueNotFoundError,
    RedisAuthError,
    RedisConfigError,
    RedisUnavailableError,
    RevokeTask,
    SkipRetry,
    TaskCanceledError,
    TaskFailedError,
    TaskIDConflictError,
    TaskNotFoundError,
    TaskTimeoutError,
)
from asynq_aio.inspector import Inspector
from asynq_aio.mux import ServeMux
from asynq_aio.periodic import PeriodicTaskConfig, PeriodicTaskManager, Schedule, SyncResult
from asynq_aio.scheduler import CronEntry, EntryOptions, Fire, Scheduler
from asynq_aio.server.config import Config, default_retry_delay
from asynq_aio.server.limits import ConcurrencyLimit, RateLimit
from asynq_aio.server.server import Server
from asynq_aio.task import Task, TaskInfo, TaskState
from asynq_aio.transport import RetryPolicy
from asynq_aio.typed import TaskDef

__all__ = [
    "App",
    "AsynqError",
    "Client",
    "ClusterNotReadyError",
    "ConcurrencyLimit",
    "Config",
    "CronEntry",
    "DuplicateTaskError",
    "Durability",
    "EnqueueHook",
    "EntryOptions",
    "FailedPreconditionError",
    "Fire",
    "HandlerNotFoundError",
    "Inspector",
    "InvalidQueueName",
    "InvalidTaskError",
    "MalformedTaskError",
    "NoDefaultClientError",
    "NotDurableError",
    "OutgoingTask",
    "PayloadTooLargeError",
    "PayloadValidationError",
    "PeriodicTaskConfig",
    "PeriodicTaskManager",
    "QueueNotFoundError",
    "RateLimit",
    "RedisAuthError",
    "RedisClientOpt",
    "RedisClusterClientOpt",
    "RedisConfigError",
    "RedisSentinelOpt",
    "RedisUnavailableError",
    "RetryPolicy",
    "RevokeTask",
    "Schedule",
    "Scheduler",
    "ServeMux",
    "Server",
    "SkipRetry",
    "SyncResult",
    "TLSOptions",
    "Task",
    "TaskCanceledError",
    "TaskContext",
    "TaskDef",
    "TaskFailedError",
    "TaskIDConflictError",
    "TaskInfo",
    "TaskNotFoundError",
    "TaskState",
    "TaskTimeoutError",
    "current_task",
    "default_retry_delay",
    "parse_redis_url",
    "use_client",
]
