"""Flow control that holds across the fleet: rate limits and concurrency caps, checked before a task
is taken.

A limit is checked inside the dequeue script (protocol/scripts/dequeue_limited.lua) against state
kept in the queue's own slot, so every worker that applies it shares one count, a cluster runs it
without a cross-slot call, and a task the limit holds back stays in pending: it is never taken and
put back. Every worker of a queue must be configured with the same limits (the state is shared; the
rule is each worker's own). Go servers know nothing of these limits: tasks a Go worker dequeues are
neither limited nor counted.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from asynq_aio.protocol.broker import LimitRule

__all__ = ["ConcurrencyLimit", "FlowLimit", "RateLimit", "rules_for"]


class _Scope(BaseModel):
    """What a limit applies to, the same for both kinds: the queues, the task type, the key field."""

    model_config = ConfigDict(frozen=True)

    kind: ClassVar[str]
    queue: str
    task_type: str | None = None
    key: str | None = None

    @field_validator("queue")
    @classmethod
    def _queue_is_given(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("queue must name a queue or a glob pattern, got an empty string")
        return v

    @field_validator("key")
    @classmethod
    def _key_names_a_field(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("key must name a top-level field of the JSON payload, got an empty string")
        return v

    def _rule(self, *, interval_ms: float = 0.0, tolerance_ms: float = 0.0, cap: int = 0) -> LimitRule:
        # the rule ID is the same on every worker for the same kind, task type and key field: their
        # state is shared
        raw = f"{self.kind}\0{self.task_type or ''}\0{self.key or ''}".encode()
        return LimitRule(
            kind=self.kind,
            rule_id=hashlib.sha1(raw).hexdigest()[:12],
            task_type=self.task_type or "",
            field=self.key or "",
            interval_ms=interval_ms,
            tolerance_ms=tolerance_ms,
            cap=cap,
        )


class RateLimit(_Scope):
    """At most ``rate`` task starts per ``per`` seconds in each queue ``queue`` matches (a name or a
    glob pattern such as ``"tenant:*"``: each matched queue has its own budget), for every task type
    or only ``task_type``, and with ``key`` one budget per value of that top-level payload field
    (per tenant, per customer). ``burst`` starts may go at once after a quiet spell; by default a
    tenth of ``rate`` (at least 1), so any window of ``per`` seconds sees at most ``rate + burst``."""

    kind: ClassVar[str] = "rate"
    rate: int = Field(ge=1)
    per: float = Field(default=1.0, gt=0)
    burst: int | None = Field(default=None, ge=1)

    def rule(self) -> LimitRule:
        """The rule the dequeue script applies."""
        interval = self.per * 1000 / self.rate
        burst = self.burst if self.burst is not None else max(1, math.ceil(self.rate / 10))
        return self._rule(interval_ms=interval, tolerance_ms=(burst - 1) * interval)


class ConcurrencyLimit(_Scope):
    """At most ``limit`` tasks running at once, across every worker, in each queue ``queue`` matches
    (a name or a glob pattern: each matched queue has its own cap), for every task type or only
    ``task_type``, and with ``key`` one cap per value of that top-level payload field. A running
    task holds its slot while its lease is alive, so a crashed worker's slots come back when their
    leases run out (``Config.lease_duration``)."""

    kind: ClassVar[str] = "cap"
    limit: int = Field(ge=1)

    def rule(self) -> LimitRule:
        """The rule the dequeue script applies."""
        return self._rule(cap=self.limit)


FlowLimit = RateLimit | ConcurrencyLimit


def rules_for(queue: str, limits: Sequence[FlowLimit]) -> list[LimitRule]:
    """The rules of ``limits`` that apply to ``queue`` (its name matches the limit's queue). Of two
    limits of the same kind, task type and key that both match, the first one given applies: they
    would share one state."""
    rules: dict[str, LimitRule] = {}
    for lim in limits:
        if fnmatch.fnmatchcase(queue, lim.queue):
            rule = lim.rule()
            rules.setdefault(rule.rule_id, rule)
    return list(rules.values())
