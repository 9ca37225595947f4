"""The queues a worker serves now: its literal names, the shards of its sharded queues, plus every
existing queue its patterns match.

``Config.queues`` may hold glob patterns (``"tenant:*"``) beside literal names, so per-tenant queues
are served without listing them, including tenants created after the worker started. The concrete
names are found in ``asynq:queues``, the set every producer (Go's too) adds a queue to when it
enqueues there: one small SMEMBERS every ``Config.queue_discovery_interval`` seconds, never a scan
of the keyspace and never on the per-task path. Every per-queue component (selector, readiness
watchers, forwarder, recoverer, janitor, aggregator, heartbeat) reads the one live
:class:`ServedQueues` instead of a fixed list, so a discovered queue reaches all of them at once.

A sharded entry (``Config.shards``) is served as its shard queues: fixed names like literals (served
before they exist, never dropped) that share the entry's weight in rotation like a pattern's queues,
through the same members and rotation, so the selector needs nothing of its own for them.
"""

from __future__ import annotations

import bisect
import fnmatch
import logging
import re
import string
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

import anyio

from asynq_aio._errors import InvalidQueueName
from asynq_aio.protocol.keys import validate_queue_name
from asynq_aio.protocol.shards import shard_names
from asynq_aio.server.storage import WorkerBroker

__all__ = ["PATTERN_WATCH_ROOM", "Entry", "ServedQueues", "is_pattern", "rotation", "validate_pattern"]

log = logging.getLogger("asynq_aio.server")

#: A ``Config.queues`` key holding any of these is a pattern; any other key is a literal queue name.
PATTERN_CHARS = frozenset("*?[")
#: Blocking waits (one per empty queue) a worker with patterns may hold beyond one per literal name.
#: The connection pool makes room for this many (connections open only when used); past it, the
#: watchers of empty queues take turns instead of exhausting the pool the other calls need.
PATTERN_WATCH_ROOM = 1000

_BRACES = frozenset("{}")
#: Characters tried when checking that a pattern's ``[...]`` class admits some allowed character.
_PROBES = "x0_-:." + string.ascii_letters + string.digits + string.punctuation + " é"


def is_pattern(key: str) -> bool:
    """Whether a ``Config.queues`` key is a glob pattern (it holds ``*``, ``?`` or ``[``): only
    patterns wait for ``asynq:queues`` to name a queue; a literal is served even before it exists."""
    return not PATTERN_CHARS.isdisjoint(key)


def _tokens(pattern: str) -> Iterator[str]:
    """The pattern split as ``fnmatch`` reads it: ``*``, ``?``, a whole ``[...]`` class, or one
    literal character (a ``[`` with no closing ``]`` is a literal)."""
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c != "[":
            yield c
            i += 1
            continue
        j = i + 1
        if j < n and pattern[j] == "!":
            j += 1
        if j < n and pattern[j] == "]":
            j += 1
        while j < n and pattern[j] != "]":
            j += 1
        if j >= n:
            yield "["
            i += 1
        else:
            yield pattern[i : j + 1]
            i = j + 1


def _witness_char(token: str) -> str | None:
    """A character the token matches that a queue name may hold (no brace), preferring a visible one."""
    if token in ("*", "?"):
        return "x"
    if len(token) == 1:
        return None if token in _BRACES else token
    match = re.compile(fnmatch.translate(token)).fullmatch
    candidates = sorted(set(_PROBES + token) - _BRACES, key=lambda ch: (ch.isspace(), ch))
    return next((ch for ch in candidates if match(ch)), None)


def validate_pattern(pattern: str) -> str:
    """Reject a pattern no valid queue name could match, at Config construction rather than as a
    worker that silently serves nothing: a name is non-empty, not only whitespace, and holds no brace.

    It builds a witness name from the pattern (``*`` and ``?`` as ``x``, each class as a character it
    admits) and checks that the name is valid and that ``fnmatch`` agrees it matches."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise InvalidQueueName(f"invalid queue pattern {pattern!r}: it must be a non-empty string")
    chars: list[str] = []
    for token in _tokens(pattern):
        ch = _witness_char(token)
        if ch is None:
            why = (
                "a queue name never holds { or } (the braces form the Redis Cluster hash tag)"
                if token in _BRACES
                else f"its class {token} admits no character a queue name may hold"
            )
            raise InvalidQueueName(f"invalid queue pattern {pattern!r}: it can never match a queue: {why}")
        chars.append(ch)
    witness = "".join(chars)
    if not witness.strip() or not fnmatch.fnmatchcase(witness, pattern):
        raise InvalidQueueName(
            f"invalid queue pattern {pattern!r}: it can never match a queue name (a name must hold "
            "something besides whitespace)"
        )
    return pattern


@dataclass(frozen=True, slots=True)
class Entry:
    """One ``Config.queues`` entry: a literal name, a sharded queue or a pattern, its weight and its
    place in the config (which breaks ties and orders the selector's draws)."""

    key: str
    weight: int
    index: int
    pattern: bool
    sharded: bool = False

    @property
    def rotates(self) -> bool:
        """Whether the entry stands for several queues that take its turns in rotation (a pattern's
        matches, a sharded queue's shards) rather than for one queue."""
        return self.pattern or self.sharded


class ServedQueues(Collection[str]):
    """The live set of queue names served (iterate it for a snapshot; it may change between two
    iterations, never during one). A literal is always in it; a pattern contributes the queues of
    ``asynq:queues`` it matches, as of the last :meth:`update`.

    A queue matching a literal is that literal's; then a sharded entry's shard is that entry's; one
    matching neither belongs to the first pattern, in config order, that matches it (so put the
    narrower pattern first). ``shards`` maps literal keys of ``queues`` to their shard counts
    (``Config.shards``, validated there); such an entry's own name is not served.
    """

    def __init__(self, queues: Mapping[str, int], shards: Mapping[str, int] | None = None) -> None:
        shards = shards or {}
        self.entries: tuple[Entry, ...] = tuple(
            Entry(key, weight, i, is_pattern(key), key in shards)
            for i, (key, weight) in enumerate(queues.items())
        )
        literals = {e.key: e for e in self.entries if not e.rotates}
        # The names served from the start and never dropped: literals, then every shard (a shard
        # also listed as a literal stays the literal's, as a pattern's match would).
        fixed = dict(literals)
        shard_members: dict[int, tuple[str, ...]] = {}
        for e in self.entries:
            if e.sharded:
                own = tuple(sorted(n for n in shard_names(e.key, shards[e.key]) if n not in literals))
                fixed.update(dict.fromkeys(own, e))
                shard_members[e.index] = own
        self._fixed: dict[str, Entry] = fixed
        self._fixed_members = shard_members
        self._matchers: list[tuple[Entry, Callable[[str], object]]] = [
            (e, re.compile(fnmatch.translate(e.key)).match) for e in self.entries if e.pattern
        ]
        self._entry_of: dict[str, Entry] = dict(fixed)
        self._names: tuple[str, ...] = tuple(fixed)
        self._members: dict[int, tuple[str, ...]] = dict(shard_members)
        self._rejected: set[str] = set()
        self.version = 0
        self._changed: anyio.Event | None = None

    # -- reading ------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, queue: object) -> bool:
        return queue in self._entry_of

    @property
    def has_patterns(self) -> bool:
        """Whether any entry is a pattern (only then is ``asynq:queues`` read)."""
        return bool(self._matchers)

    @property
    def fixed_count(self) -> int:
        """How many queues are served from the start whatever exists: the literal names plus the
        shards of the sharded entries (each needs its own blocking wait, as a literal does)."""
        return len(self._fixed)

    def entry_of(self, queue: str) -> Entry | None:
        """The entry ``queue`` is served under (its weight and rotation group), None if not served."""
        return self._entry_of.get(queue)

    def members(self, index: int) -> tuple[str, ...]:
        """The served queues of the pattern or sharded entry at ``index``, sorted: the order of its
        rotation."""
        return self._members.get(index, ())

    def weights(self) -> dict[str, int]:
        """Each served queue with its entry's weight: what the heartbeat publishes, so Go's CLI and
        asynqmon see concrete queue names, never a pattern."""
        return {q: self._entry_of[q].weight for q in self._names}

    def serves(self, queue: str) -> bool:
        """Whether ``queue`` is served now or would be once it exists (a literal or a pattern match)."""
        return queue in self._entry_of or self._match(queue) is not None

    def watch_budget(self) -> int | None:
        """How many blocking waits to make room for: None (one per fixed name, as without patterns)
        when there is no pattern, else the fixed names plus :data:`PATTERN_WATCH_ROOM`."""
        return self.fixed_count + PATTERN_WATCH_ROOM if self.has_patterns else None

    def _match(self, queue: str) -> Entry | None:
        for entry, match in self._matchers:
            if match(queue):
                return entry
        return None

    # -- updating -----------------------------------------------------------------------------------

    def update(self, existing: Iterable[str]) -> tuple[list[str], list[str]]:
        """Resolve the patterns against the queues that exist now (``asynq:queues``): returns the
        names added and dropped. A name that is not a valid queue name (a foreign producer's, with a
        brace) is skipped: no key of it could be built."""
        entry_of = dict(self._fixed)
        for name in existing:
            if name in entry_of or not self._matchers:
                continue
            entry = self._match(name)
            if entry is None:
                continue
            try:
                validate_queue_name(name)
            except InvalidQueueName as exc:
                if name not in self._rejected:
                    self._rejected.add(name)
                    log.warning("queue %r matches %r but is not served: %s", name, entry.key, exc)
                continue
            entry_of[name] = entry
        added = [q for q in entry_of if q not in self._entry_of]
        dropped = [q for q in self._entry_of if q not in entry_of]
        if added or dropped:
            self._entry_of = entry_of
            matched = sorted(q for q, e in entry_of.items() if e.pattern)
            self._names = (*self._fixed, *matched)
            members: dict[int, list[str]] = {}
            for q in matched:
                members.setdefault(entry_of[q].index, []).append(q)
            self._members = {**self._fixed_members, **{i: tuple(qs) for i, qs in members.items()}}
            self.version += 1
            if self._changed is not None:
                self._changed.set()
                self._changed = None
        return added, dropped

    async def wait_changed(self, seen: int) -> int:
        """Wait until :attr:`version` differs from ``seen``; returns the new version."""
        while self.version == seen:
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()
        return self.version

    async def refresh(self, broker: WorkerBroker) -> None:
        """Read ``asynq:queues`` once and resolve the patterns against it."""
        added, dropped = self.update(await broker.all_queues())
        if added or dropped:
            log.info(
                "queue patterns: now serving %d queue(s); added %s; dropped %s",
                len(self),
                ", ".join(added) or "none",
                ", ".join(dropped) or "none",
            )

    async def discover(self, broker: WorkerBroker, interval: float) -> None:
        """Re-read ``asynq:queues`` every ``interval`` seconds until cancelled. A failed read keeps
        the last set (a queue is dropped only when Redis says it is gone, not when Redis is away)."""
        while True:
            await anyio.sleep(interval)
            try:
                await self.refresh(broker)
            except Exception as exc:
                log.warning("reading asynq:queues for the queue patterns failed: %s", exc)


def rotation(members: tuple[str, ...], last: str | None) -> Iterator[str]:
    """``members`` (sorted) from the first one after ``last``, wrapping round: the next queue in turn."""
    start = 0 if last is None else bisect.bisect_right(members, last)
    yield from members[start:]
    yield from members[:start]
