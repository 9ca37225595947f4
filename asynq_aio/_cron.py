"""Cron specs as Asynq's Go scheduler accepts them (robfig/cron's standard parser), plus a DST rule.

Accepted: five fields ``minute hour day-of-month month day-of-week`` with ``*``, ``?``, numbers,
``a-b`` ranges, ``/step`` steps, ``,`` lists and JAN-DEC / SUN-SAT names; the descriptors
``@yearly @annually @monthly @weekly @daily @midnight @hourly``; ``@every <Go duration>``; and a
``CRON_TZ=<zone>`` (or ``TZ=``) prefix that overrides the scheduler's time zone for one spec.

Two deliberate differences from Go, both needed for several schedulers to agree on fire times:

* ``@every d`` fires on multiples of ``d`` since the unix epoch (``@every 30s`` at :00 and :30),
  not ``d`` after each process started, so every scheduler computes the same fire instants.
* Daylight saving: a spec with ``*`` in the hour field runs on real time (an hourly job fires every
  real hour, twice through 01:00-02:00 when clocks go back, and not at wall times that do not
  exist). A spec with fixed hours fires once per matching wall-clock time: a wall time repeated when
  clocks go back fires at its first occurrence only, and one skipped when clocks go forward fires at
  the moment of the jump (``30 2 * * *`` runs at 03:00 that day instead of not at all). This is Vixie
  cron's rule; robfig/cron skips the forward-jump run and runs the repeated one twice.
"""

from __future__ import annotations

import bisect
import re
from abc import ABC, abstractmethod
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["CronSchedule", "IntervalSchedule", "Schedule", "location_name", "parse", "parse_go_duration"]

_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_MONTHS = {m: i + 1 for i, m in enumerate(_MONTH_NAMES)}
_DAYS = {d: i for i, d in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # the most each month can have
_QUARTZ = re.compile(r"\d*L|LW|\d+W|\d+#\d+")  # Quartz-style extensions robfig/cron rejects too
# Longest gap between two matching days of a valid spec: Feb 29 across a skipped leap year (2100).
_MAX_SEARCH_DAYS = 366 * 9


def location_name(location: tzinfo) -> str:
    """A stable name for a time zone (``Europe/Berlin``, ``UTC``), used in entry identities."""
    key = getattr(location, "key", None)
    if isinstance(key, str):
        return key
    name = location.tzname(None)
    return name if name else str(location)


class Schedule(ABC):
    """A parsed spec: :meth:`next` gives the first fire instant strictly after a moment."""

    spec: str
    location: tzinfo

    @abstractmethod
    def next(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (an aware datetime), in :attr:`location`."""

    @property
    @abstractmethod
    def location_key(self) -> str:
        """Name of the zone the schedule runs in (part of an entry's identity)."""


class IntervalSchedule(Schedule):
    """``@every <duration>``: fires at every multiple of the interval since the unix epoch."""

    def __init__(self, spec: str, seconds: int, location: tzinfo) -> None:
        self.spec = spec
        self.seconds = seconds
        self.location = location

    @property
    def location_key(self) -> str:
        """Always ``UTC``: the fire instants are epoch-aligned, so the zone does not change them."""
        return "UTC"  # epoch-aligned: the zone does not change the instants

    def next(self, after: datetime) -> datetime:
        """The first multiple of the interval since the unix epoch strictly after ``after`` (an aware
        datetime; a naive one raises ValueError), in :attr:`location`."""
        ts = _aware(after).timestamp()
        n = int(ts // self.seconds) + 1
        return datetime.fromtimestamp(n * self.seconds, tz=self.location)

    def __repr__(self) -> str:
        return f"IntervalSchedule({self.spec!r}, seconds={self.seconds})"


class CronSchedule(Schedule):
    """A five-field spec, evaluated in ``location`` with the DST rule in the module docstring."""

    def __init__(
        self,
        spec: str,
        *,
        minutes: frozenset[int],
        hours: frozenset[int],
        days: frozenset[int],
        months: frozenset[int],
        weekdays: frozenset[int],
        days_star: bool,
        weekdays_star: bool,
        hours_star: bool,
        location: tzinfo,
    ) -> None:
        self.spec = spec
        self.location = location
        self.minutes = minutes
        self.hours = hours
        self.days = days
        self.months = months
        self.weekdays = weekdays
        self._days_star = days_star
        self._weekdays_star = weekdays_star
        # hour field "*": follow real time through DST changes (see module docstring)
        self._real_time = hours_star
        self._day_seconds = sorted(h * 3600 + m * 60 for h in hours for m in minutes)

    @property
    def location_key(self) -> str:
        """The name of the schedule's zone (see :func:`location_name`)."""
        return location_name(self.location)

    def __repr__(self) -> str:
        return f"CronSchedule({self.spec!r}, location={self.location_key!r})"

    def matches_day(self, day: date) -> bool:
        """Month, then day-of-month / day-of-week with cron's rule: either one when both are
        restricted, both when one of them is ``*``."""
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        if self._days_star or self._weekdays_star:
            return dom and dow
        return dom or dow

    def next(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after`` (an aware datetime; a naive one raises ValueError),
        in :attr:`location`, with the module's DST rule. Raises ValueError too if no fire time falls within
        about nine years."""
        t = _aware(after).astimezone(UTC)
        day = t.astimezone(self.location).date() - timedelta(days=1)
        for _ in range(_MAX_SEARCH_DAYS):
            if self.matches_day(day):
                found = self._first_in_day(day, t)
                if found is not None:
                    return found.astimezone(self.location)
            day += timedelta(days=1)
        raise ValueError(f"cron spec {self.spec!r} has no fire time within {_MAX_SEARCH_DAYS} days")

    def _first_in_day(self, day: date, t: datetime, *, look_ahead: bool = True) -> datetime | None:
        """The first instant of ``day`` (a local calendar day) later than ``t``, or None."""
        start = datetime.combine(day, time())
        o_start = start.replace(tzinfo=self.location).utcoffset()
        o_end = (start + timedelta(hours=23, minutes=59)).replace(tzinfo=self.location, fold=1).utcoffset()
        if o_start is not None and o_start == o_end:
            # one UTC offset all day: wall time and real time move together, so bisect
            threshold = (t.replace(tzinfo=None) + o_start - start).total_seconds()
            i = bisect.bisect_right(self._day_seconds, threshold)
            if i == len(self._day_seconds):
                return None
            local = start + timedelta(seconds=self._day_seconds[i])
            return (local - o_start).replace(tzinfo=UTC)
        # a transition day (twice a year): map every matching wall time to its instants
        found = [
            inst
            for secs in self._day_seconds
            for inst in self._instants(start + timedelta(seconds=secs))
            if inst > t
        ]
        best = min(found) if found else None
        if look_ahead:
            # a backward jump across midnight can put part of the next day before the rest of this one
            nxt = day + timedelta(days=1)
            if self.matches_day(nxt):
                other = self._first_in_day(nxt, t, look_ahead=False)
                if other is not None and (best is None or other < best):
                    best = other
        return best

    def _instants(self, local: datetime) -> list[datetime]:
        """Real instants (UTC) at which the naive wall time ``local`` fires."""
        first = local.replace(tzinfo=self.location, fold=0).astimezone(UTC)
        second = local.replace(tzinfo=self.location, fold=1).astimezone(UTC)
        if first == second:
            return [first]
        if first.astimezone(self.location).replace(tzinfo=None) == local:
            # repeated wall time (clocks went back): first occurrence, or both on real time
            return [first, second] if self._real_time else [first]
        # skipped wall time (clocks went forward): none on real time, else the moment of the jump
        return [] if self._real_time else [self._transition(second, first)]

    def _transition(self, lo: datetime, hi: datetime) -> datetime:
        """The instant in (lo, hi] where the zone's offset changes to the offset it has at ``hi``."""
        target = hi.astimezone(self.location).utcoffset()
        a, b = int(lo.timestamp()), int(hi.timestamp())
        while b - a > 1:
            mid = (a + b) // 2
            if datetime.fromtimestamp(mid, tz=self.location).utcoffset() == target:
                b = mid
            else:
                a = mid
        return datetime.fromtimestamp(b, tz=UTC)


def parse(spec: str, location: tzinfo = UTC) -> Schedule:
    """Parse a cron spec; raises ValueError naming the spec and the bad part."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("invalid cron spec: empty")
    text = " ".join(spec.split())
    if text.startswith(("CRON_TZ=", "TZ=")):
        head, _, text = text.partition(" ")
        location = _zone(spec, head.split("=", 1)[1])
        if not text:
            raise ValueError(f"invalid cron spec {spec!r}: nothing after {head}")
    if text == "@every" or text.startswith("@every "):
        rest = text[len("@every") :].strip()
        if not rest:
            raise ValueError(f"invalid cron spec {spec!r}: @every needs a duration such as 30s or 1m30s")
        try:
            seconds = int(parse_go_duration(rest))
        except ValueError as exc:
            raise ValueError(f"invalid cron spec {spec!r}: {exc}") from None
        if seconds < 1:
            raise ValueError(f"invalid cron spec {spec!r}: @every needs at least 1s")
        return IntervalSchedule(spec, seconds, location)
    if text.startswith("@"):
        fields_text = _DESCRIPTORS.get(text.lower())
        if fields_text is None:
            known = ", ".join([*_DESCRIPTORS, "@every <duration>"])
            raise ValueError(f"invalid cron spec {spec!r}: unknown descriptor (known: {known})")
        text = fields_text
    return _parse_fields(spec, text, location)


def _zone(spec: str, name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"invalid cron spec {spec!r}: unknown time zone {name!r}") from exc


def _parse_fields(spec: str, text: str, location: tzinfo) -> CronSchedule:
    fields = text.split(" ")
    if len(fields) != 5:
        raise ValueError(
            f"invalid cron spec {spec!r}: expected 5 fields (minute hour day-of-month month "
            f"day-of-week), got {len(fields)}"
        )
    minutes, _ = _field(spec, "minute", fields[0], 0, 59, None)
    hours, hours_star = _field(spec, "hour", fields[1], 0, 23, None)
    days, days_star = _field(spec, "day-of-month", fields[2], 1, 31, None)
    months, _ = _field(spec, "month", fields[3], 1, 12, _MONTHS)
    weekdays, weekdays_star = _field(spec, "day-of-week", fields[4], 0, 7, _DAYS)
    if 7 in weekdays:  # 7 is Sunday too, as in Vixie cron
        weekdays = (weekdays - {7}) | {0}
    # with day-of-week "*" the day-of-month alone decides; "30 2" (Feb 30th) would never fire
    if weekdays_star and not any(d <= _DAYS_IN_MONTH[m - 1] for m in months for d in days):
        raise ValueError(f"invalid cron spec {spec!r}: the day-of-month never occurs in the given months")
    return CronSchedule(
        spec,
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=weekdays,
        days_star=days_star,
        weekdays_star=weekdays_star,
        hours_star=hours_star,
        location=location,
    )


def _field(
    spec: str, name: str, text: str, lo: int, hi: int, names: dict[str, int] | None
) -> tuple[frozenset[int], bool]:
    """One field as a set of values, plus whether it is a ``*`` (robfig's "star bit")."""

    def bad(part: str, why: str) -> ValueError:
        return ValueError(f"invalid cron spec {spec!r}: {name} field {part!r}: {why}")

    def value(part: str, token: str) -> int:
        if names is not None and token.upper() in names:
            return names[token.upper()]
        if not token.isdigit():
            hint = " (L, W and # are not supported)" if _QUARTZ.fullmatch(token.upper()) else ""
            raise bad(part, f"{token!r} is not a number{hint}")
        v = int(token)
        if not lo <= v <= hi:
            raise bad(part, f"{v} is out of range {lo}-{hi}")
        return v

    out: set[int] = set()
    star = False
    for part in text.split(","):
        if not part:
            raise bad(text, "empty list item")
        rng, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise bad(part, "the step must be a positive number")
            step = int(step_text)
        if rng in ("*", "?"):
            start, end = lo, hi
            if names is _DAYS:
                end = 6  # "*" over day-of-week means SUN-SAT once, not 7 as a second Sunday
            star = star or step == 1
        elif "-" in rng:
            a, _, b = rng.partition("-")
            start, end = value(part, a), value(part, b)
            if start > end:
                raise bad(part, f"range start {start} is after its end {end}")
        else:
            start = value(part, rng)
            end = hi if slash else start  # "N/step" means N to the maximum, by step
        out.update(range(start, end + 1, step))
    return frozenset(out), star


_DURATION_UNITS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),  # Go accepts the micro sign
    "μs": Decimal("1e-6"),  # and the Greek mu
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> Decimal:
    """Seconds in a Go ``time.ParseDuration`` string (``30s``, ``1m30s``, ``1.5h``, ``500ms``)."""
    s = text.strip()
    sign = Decimal(1)
    if s.startswith(("+", "-")):
        sign = Decimal(-1) if s[0] == "-" else sign
        s = s[1:]
    if s == "0":
        return Decimal(0)
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = Decimal(0)
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r} (use units h, m, s, ms, us, ns, e.g. 1m30s)")
        try:
            total += Decimal(m.group(1)) * _DURATION_UNITS[m.group(2)]
        except InvalidOperation:  # pragma: no cover - the regex only passes decimal numbers
            raise ValueError(f"invalid duration {text!r}") from None
        pos = m.end()
    return sign * total


def _aware(when: datetime) -> datetime:
    if not isinstance(when, datetime):
        raise TypeError(f"expected a datetime, got {type(when).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"expected a timezone-aware datetime, got {when!r}")
    return when
