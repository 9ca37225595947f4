"""All Redis I/O of the periodic-task scheduler, in Asynq v0.26's format, plus the per-fire claim.

Asynq's layout (PROTOCOL.md): ``asynq:schedulers`` is a zset of ``asynq:schedulers:{<id>}`` -> expiry
(unix s); that key is a list of protobuf ``SchedulerEntry``, rewritten on every heartbeat with a TTL;
``asynq:scheduler_history:<entry id>`` is a zset of protobuf ``SchedulerEnqueueEvent`` scored by
enqueue time, newest 1000 kept. Go's ``asynq cron ls`` / ``cron history`` read exactly these.

The claim key is ours: ``asynq:{<queue>}:cron:<entry id>:<fire unix>`` (keys.fire_claim_key), in the
target queue's slot. A scheduler first takes a short lease on it, then stores the fire's task and
marks the fire settled in ONE script (the enqueue script wrapped with the claim check), so a fire is
stored at most once however many schedulers try it, and a scheduler that dies after taking the lease
only delays the fire until the lease expires and another scheduler takes over (Go Asynq has no such
guard: two schedulers enqueue every fire twice).

The option strings (``Queue("x")``, ``Timeout(30s)``) are part of the wire format: Go prints them
with ``Option.String()``, so the formatting helpers live here too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.protobuf.message import DecodeError

from asynq_aio._errors import MalformedTaskError
from asynq_aio.protocol import scripts
from asynq_aio.protocol._redis.ops import LuaScript, Op
from asynq_aio.protocol._redis.transport import Transport
from asynq_aio.protocol.asynq_pb2 import SchedulerEnqueueEvent, SchedulerEntry
from asynq_aio.protocol.codec import from_timestamp, to_timestamp
from asynq_aio.protocol.keys import (
    ALL_SCHEDULERS,
    fire_claim_key,
    scheduler_entries_key,
    scheduler_history_key,
)
from asynq_aio.protocol.replies import text

__all__ = [
    "HISTORY_LIMIT",
    "SETTLED_BY_OTHER",
    "EnqueueEvent",
    "EntryRecord",
    "FireClaim",
    "SchedulerStore",
    "decode_entry",
    "decode_event",
    "encode_entry",
    "encode_event",
    "go_duration",
    "go_quote",
    "go_unix_date",
    "option_strings",
]

HISTORY_LIMIT = 1000

# KEYS[1] entries list  ARGV[1] TTL (s)  ARGV[2..] encoded entries. Rewrites the list atomically so
# a reader never sees it half-written; running it twice leaves the same list.
_WRITE_ENTRIES = LuaScript(
    "scheduler_write_entries",
    """redis.call("DEL", KEYS[1])
for i = 2, #ARGV do
  redis.call("RPUSH", KEYS[1], ARGV[i])
end
redis.call("EXPIRE", KEYS[1], ARGV[1])
return 1
""",
)

# A fire's claim key holds "L <owner>" while a scheduler is about to enqueue it (a lease, PX), then
# "D <owner> <code>" once it is settled (EX: longer than any scheduler would still try that fire).
#
# KEYS[1] claim key  ARGV[1] scheduler id  ARGV[2] lease (ms). Returns {status, ms}: {1, 0} the lease
# is ours (taken now, or before by this scheduler: a re-sent call after a lost reply); {0, ms} another
# scheduler holds the lease for `ms` more; {-1, 0} the fire is already settled.
_CLAIM_FIRE = LuaScript(
    "scheduler_claim_fire",
    """local v = redis.call("GET", KEYS[1])
if v == false then
  redis.call("SET", KEYS[1], "L " .. ARGV[1], "PX", ARGV[2])
  return {1, 0}
end
if string.sub(v, 1, 2) == "D " then
  return {-1, 0}
end
if v == "L " .. ARGV[1] then
  return {1, 0}
end
return {0, math.max(redis.call("PTTL", KEYS[1]), 0)}
""",
)

# The enqueue script (scripts/enqueue.lua) run inside a function whose parameters shadow KEYS and
# ARGV, wrapped so that the fire's claim is checked and settled in the same atomic step as the task
# write: a fire is stored at most once whoever runs it, and a scheduler that dies after claiming
# leaves a lease that expires, never a fire marked done without its task.
# KEYS = the enqueue's keys, then the claim key. ARGV = the enqueue's args, then the scheduler id and
# the settled claim's TTL (s). Returns the enqueue's code (1 stored, -1 ID conflict, -2 duplicate);
# 2 when another scheduler settled the fire first; a re-sent call gets its first answer again.
_ENQUEUE_FIRE = LuaScript(
    "scheduler_enqueue_fire",
    "local function enqueue(KEYS, ARGV)\n"
    + scripts.ENQUEUE.source
    + """
end
local claim = KEYS[#KEYS]
local owner = ARGV[#ARGV - 1]
local v = redis.call("GET", claim)
if v and string.sub(v, 1, 2) == "D " then
  local holder, code = string.match(v, "^D (.+) (%-?%d+)$")
  if holder == owner then
    return tonumber(code)
  end
  return 2
end
local ekeys, eargv = {}, {}
for i = 1, #KEYS - 1 do ekeys[i] = KEYS[i] end
for i = 1, #ARGV - 2 do eargv[i] = ARGV[i] end
local code = enqueue(ekeys, eargv)[1]
redis.call("SET", claim, "D " .. owner .. " " .. code, "EX", ARGV[#ARGV])
return code
""",
)

# KEYS[1] history zset  ARGV[1] score (unix s)  ARGV[2] encoded event  ARGV[3] events kept
# ARGV[4] TTL (s). As Go: trim to keep-1 then add, so the zset holds at most `keep`. Re-running adds
# the same member again, which is a no-op.
_RECORD_EVENT = LuaScript(
    "scheduler_record_event",
    """redis.call("ZREMRANGEBYRANK", KEYS[1], 0, -tonumber(ARGV[3]))
redis.call("ZADD", KEYS[1], ARGV[1], ARGV[2])
redis.call("EXPIRE", KEYS[1], ARGV[4])
return 1
""",
)


SETTLED_BY_OTHER = 2


@dataclass(frozen=True, slots=True)
class FireClaim:
    """The answer to a claim: ``won``; else ``settled`` (nothing to do) or a lease that another
    scheduler holds for ``retry_in`` more seconds (try again then: it may have died)."""

    won: bool
    settled: bool = False
    retry_in: float = 0.0


@dataclass(frozen=True, slots=True)
class EntryRecord:
    """One ``SchedulerEntry`` as a heartbeat writes it (None for Go's zero time)."""

    id: str
    spec: str
    task_type: str
    task_payload: bytes
    enqueue_options: tuple[str, ...]
    next_enqueue: datetime | None
    prev_enqueue: datetime | None


@dataclass(frozen=True, slots=True)
class EnqueueEvent:
    """One ``SchedulerEnqueueEvent``: a task a scheduler enqueued for an entry."""

    task_id: str
    enqueued_at: datetime


def encode_entry(rec: EntryRecord) -> bytes:
    """An entry as the protobuf ``SchedulerEntry`` bytes ``asynq cron ls`` reads (None as Go's zero time)."""
    return SchedulerEntry(
        id=rec.id,
        spec=rec.spec,
        task_type=rec.task_type,
        task_payload=rec.task_payload,
        enqueue_options=list(rec.enqueue_options),
        next_enqueue_time=to_timestamp(rec.next_enqueue),
        prev_enqueue_time=to_timestamp(rec.prev_enqueue),
    ).SerializeToString()


def decode_entry(data: bytes) -> EntryRecord:
    """The inverse of :func:`encode_entry`; raises MalformedTaskError for bytes that do not parse."""
    msg = SchedulerEntry()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise MalformedTaskError(f"not a valid asynq SchedulerEntry: {exc}") from exc
    return EntryRecord(
        id=msg.id,
        spec=msg.spec,
        task_type=msg.task_type,
        task_payload=msg.task_payload,
        enqueue_options=tuple(msg.enqueue_options),
        next_enqueue=from_timestamp(msg.next_enqueue_time),
        prev_enqueue=from_timestamp(msg.prev_enqueue_time),
    )


def encode_event(ev: EnqueueEvent) -> bytes:
    """An enqueue event as the protobuf ``SchedulerEnqueueEvent`` bytes Go's ``asynq cron history`` reads."""
    return SchedulerEnqueueEvent(
        task_id=ev.task_id, enqueue_time=to_timestamp(ev.enqueued_at)
    ).SerializeToString()


def decode_event(data: bytes) -> EnqueueEvent:
    """The inverse of :func:`encode_event`; raises MalformedTaskError for bytes that do not parse."""
    msg = SchedulerEnqueueEvent()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise MalformedTaskError(f"not a valid asynq SchedulerEnqueueEvent: {exc}") from exc
    return EnqueueEvent(task_id=msg.task_id, enqueued_at=msg.enqueue_time.ToDatetime(tzinfo=UTC))


# -- Go's Option.String() -----------------------------------------------------------------------------


def go_duration(value: float | timedelta) -> str:
    """Go's ``time.Duration.String()``: ``30s``, ``1m30s``, ``1h0m0s``, ``1.5s``, ``500ms``."""
    if isinstance(value, timedelta):
        ns = (value.days * 86400 + value.seconds) * 10**9 + value.microseconds * 1000
    else:
        ns = round(value * 1e9)
    neg, u = ns < 0, abs(ns)
    if u == 0:
        return "0s"
    if u < 10**9:
        if u < 1000:
            out = f"{u}ns"
        elif u < 10**6:
            out = _frac(u, 3) + "µs"
        else:
            out = _frac(u, 6) + "ms"
    else:
        secs, frac = divmod(u, 10**9)
        out = _frac(secs % 60 * 10**9 + frac, 9) + "s"
        mins = secs // 60
        if mins:
            out = f"{mins % 60}m{out}"
            if mins // 60:
                out = f"{mins // 60}h{out}"
    return "-" + out if neg else out


def _frac(value: int, digits: int) -> str:
    whole, frac = divmod(value, 10**digits)
    return f"{whole}.{frac:0{digits}d}".rstrip("0") if frac else str(whole)


def go_quote(s: str) -> str:
    """Go's ``%q`` of a string (strconv.Quote): double quotes, backslash escapes."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def go_unix_date(when: datetime) -> str:
    """Go's ``time.UnixDate`` layout, ``Mon Jan _2 15:04:05 MST 2006``, in the datetime's own zone."""
    name = when.tzname() or ""
    if not name or (name.startswith("UTC") and name != "UTC"):
        off = when.utcoffset() or timedelta()
        minutes = int(off.total_seconds()) // 60
        name = f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    return f"{when:%a %b} {when.day:>2} {when:%H:%M:%S} {name} {when.year}"


def option_strings(
    *,
    queue: str | None = None,
    max_retry: int | None = None,
    timeout: float | timedelta | None = None,
    deadline: datetime | None = None,
    process_in: float | timedelta | None = None,
    unique: float | timedelta | None = None,
    retention: float | timedelta | None = None,
    group: str | None = None,
) -> list[str]:
    """The options a caller set, as Go prints them in ``SchedulerEntry.enqueue_options``."""
    out: list[str] = []
    if queue is not None:
        out.append(f"Queue({go_quote(queue)})")
    if max_retry is not None:
        out.append(f"MaxRetry({max_retry})")
    if timeout is not None:
        out.append(f"Timeout({go_duration(timeout)})")
    if deadline is not None:
        out.append(f"Deadline({go_unix_date(deadline)})")
    if unique is not None:
        out.append(f"Unique({go_duration(unique)})")
    if process_in is not None:
        out.append(f"ProcessIn({go_duration(process_in)})")
    if retention is not None:
        out.append(f"Retention({go_duration(retention)})")
    if group is not None:
        out.append(f"Group({go_quote(group)})")
    return out


# -- Redis I/O ----------------------------------------------------------------------------------------


class SchedulerStore:
    """The scheduler's storage operations; every one is safe to re-send after a lost reply."""

    def __init__(self, transport: Transport, *, clock: Callable[[], float] = time.time) -> None:
        self.transport = transport
        self.clock = clock

    async def write_entries(self, scheduler_id: str, entries: Sequence[EntryRecord], ttl: float) -> None:
        """Heartbeat: rewrite this scheduler's entry list and its expiry in ``asynq:schedulers``.

        Members that expired over a minute ago are dropped from the zset on the way (schedulers that
        died without clearing); Go's CLI already ignores them, so this only stops the zset growing.
        """
        key = scheduler_entries_key(scheduler_id)
        now = self.clock()
        ttl_s = max(1, round(ttl))
        ops = [
            Op.eval(_WRITE_ENTRIES, [key], [ttl_s, *(encode_entry(e) for e in entries)]),
            Op.command("ZADD", ALL_SCHEDULERS, int(now + ttl_s), key),
            Op.command("ZREMRANGEBYSCORE", ALL_SCHEDULERS, "-inf", f"({int(now) - 60}"),
        ]
        for r in await self.transport.batch(ops):
            if isinstance(r, Exception):
                raise r

    async def clear_entries(self, scheduler_id: str) -> None:
        """Remove this scheduler from ``asynq:schedulers`` (graceful shutdown)."""
        key = scheduler_entries_key(scheduler_id)
        for r in await self.transport.batch(
            [Op.command("ZREM", ALL_SCHEDULERS, key), Op.command("DEL", key)]
        ):
            if isinstance(r, Exception):
                raise r

    async def list_entries(self) -> dict[str, list[EntryRecord]]:
        """Entries of every live scheduler, by scheduler id (what ``asynq cron ls`` shows)."""
        keys = [
            text(k)
            for k in await self.transport.call("ZRANGEBYSCORE", ALL_SCHEDULERS, int(self.clock()), "+inf")
        ]
        lists = await self.transport.batch([Op.command("LRANGE", k, 0, -1) for k in keys])
        out: dict[str, list[EntryRecord]] = {}
        prefix = scheduler_entries_key("")[:-1]  # "asynq:schedulers:{"
        for key, items in zip(keys, lists, strict=True):
            if isinstance(items, Exception):
                raise items
            sid = key[len(prefix) : -1] if key.startswith(prefix) else key
            out[sid] = [decode_entry(bytes(x)) for x in items]
        return out

    async def claim_fire(
        self, queue: str, entry_id: str, fire_unix: int, owner: str, lease: float
    ) -> FireClaim:
        """Try to take the lease on the fire ``(entry_id, fire_unix)`` for ``owner``."""
        key = fire_claim_key(queue, entry_id, fire_unix)
        status, ms = await self.transport.script(_CLAIM_FIRE, [key], [owner, max(1, round(lease * 1000))])
        if int(status) == 1:
            return FireClaim(won=True)
        if int(status) == -1:
            return FireClaim(won=False, settled=True)
        return FireClaim(won=False, retry_in=int(ms) / 1000)

    async def enqueue_fire(
        self, enqueue: Op, queue: str, entry_id: str, fire_unix: int, owner: str, ttl: float
    ) -> int:
        """Run ``enqueue`` (the broker's enqueue op for the fire's task) and settle the fire in one
        atomic step. Returns 1 stored, -1 task-ID conflict, -2 duplicate (unique lock held), or
        :data:`SETTLED_BY_OTHER` when another scheduler settled the fire first."""
        if enqueue.script is not scripts.ENQUEUE:
            raise ValueError(f"expected an enqueue op, got {enqueue!r}")
        keys = [*(str(k) for k in enqueue.args[: enqueue.nkeys]), fire_claim_key(queue, entry_id, fire_unix)]
        args = [*enqueue.args[enqueue.nkeys :], owner, max(1, round(ttl))]
        return int(await self.transport.script(_ENQUEUE_FIRE, keys, args))

    async def fire_claim(self, queue: str, entry_id: str, fire_unix: int) -> str | None:
        """The raw claim of a fire (``L <owner>`` leased, ``D <owner> <code>`` settled), if any."""
        raw = await self.transport.call("GET", fire_claim_key(queue, entry_id, fire_unix))
        return None if raw is None else text(raw)

    async def record_enqueue(
        self, entry_id: str, event: EnqueueEvent, *, keep: int = HISTORY_LIMIT, ttl: float
    ) -> None:
        """Append to the entry's history zset, keeping the newest ``keep`` events.

        Unlike Go, the zset gets a TTL (refreshed on every write), so the history of an entry that
        is no longer scheduled anywhere does not stay in Redis forever.
        """
        await self.transport.script(
            _RECORD_EVENT,
            [scheduler_history_key(entry_id)],
            [int(event.enqueued_at.timestamp()), encode_event(event), keep, max(1, round(ttl))],
        )

    async def history(self, entry_id: str, *, limit: int = HISTORY_LIMIT) -> list[EnqueueEvent]:
        """The entry's enqueue events, newest first."""
        raw = await self.transport.call("ZREVRANGE", scheduler_history_key(entry_id), 0, max(0, limit - 1))
        return [decode_event(bytes(x)) for x in raw]

    async def clear_history(self, entry_id: str) -> None:
        """Delete the entry's enqueue history."""
        await self.transport.call("DEL", scheduler_history_key(entry_id))
