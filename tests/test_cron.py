"""Cron spec parsing and next-fire computation, including daylight-saving transitions."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from asynq_aio._cron import CronSchedule, IntervalSchedule, parse, parse_go_duration

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # DST shifts by 30 minutes
KOLKATA = ZoneInfo("Asia/Kolkata")  # +05:30, no DST


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def fires(spec: str, after: datetime, n: int, location: ZoneInfo | None = None) -> list[datetime]:
    sched = parse(spec, location or UTC)
    out: list[datetime] = []
    t = after
    for _ in range(n):
        t = sched.next(t)
        out.append(t)
    return out


@pytest.mark.parametrize(
    ("spec", "after", "expected"),
    [
        ("* * * * *", utc(2024, 1, 1, 12, 0, 0), [utc(2024, 1, 1, 12, 1), utc(2024, 1, 1, 12, 2)]),
        ("* * * * *", utc(2024, 1, 1, 12, 0, 59), [utc(2024, 1, 1, 12, 1), utc(2024, 1, 1, 12, 2)]),
        ("*/15 * * * *", utc(2024, 1, 1, 12, 7), [utc(2024, 1, 1, 12, 15), utc(2024, 1, 1, 12, 30)]),
        ("5/15 * * * *", utc(2024, 1, 1, 12, 50), [utc(2024, 1, 1, 12, 50, 0) + timedelta(minutes=15)]),
        ("1-10/3 * * * *", utc(2024, 1, 1, 12, 5), [utc(2024, 1, 1, 12, 7), utc(2024, 1, 1, 12, 10)]),
        ("0,30 9-10 * * *", utc(2024, 1, 1, 9, 45), [utc(2024, 1, 1, 10), utc(2024, 1, 1, 10, 30)]),
        ("0 0 * * *", utc(2024, 2, 28, 0, 0), [utc(2024, 2, 29), utc(2024, 3, 1)]),
        ("0 0 1 * *", utc(2024, 1, 31, 23, 59), [utc(2024, 2, 1), utc(2024, 3, 1)]),
        ("0 0 31 * *", utc(2024, 1, 31, 0, 1), [utc(2024, 3, 31), utc(2024, 5, 31)]),
        ("0 0 29 2 *", utc(2024, 3, 1), [utc(2028, 2, 29)]),
        ("0 0 29 2 *", utc(2097, 1, 1), [utc(2104, 2, 29)]),  # 2100 is not a leap year
        ("0 12 * JAN,jul *", utc(2024, 1, 31, 13), [utc(2024, 7, 1, 12)]),
        ("0 9 * * MON-FRI", utc(2024, 6, 7, 10), [utc(2024, 6, 10, 9), utc(2024, 6, 11, 9)]),
        ("0 9 * * 1-5", utc(2024, 6, 7, 10), [utc(2024, 6, 10, 9)]),
        ("0 0 * * 7", utc(2024, 6, 3), [utc(2024, 6, 9)]),  # 7 is Sunday too
        ("0 0 * * sun", utc(2024, 6, 3), [utc(2024, 6, 9)]),
        ("0 0 ? * 0", utc(2024, 6, 3), [utc(2024, 6, 9)]),
        # both day fields restricted: either matches (1st of the month OR a Monday)
        ("0 0 1 * MON", utc(2024, 6, 25), [utc(2024, 7, 1), utc(2024, 7, 8)]),
        ("0 0 13 * FRI", utc(2024, 9, 1), [utc(2024, 9, 6), utc(2024, 9, 13), utc(2024, 9, 20)]),
        # day-of-week with a step is not "*": OR again
        ("0 0 1 * */7", utc(2024, 6, 2), [utc(2024, 6, 9), utc(2024, 6, 16)]),
        ("@yearly", utc(2024, 5, 5), [utc(2025, 1, 1)]),
        ("@annually", utc(2024, 5, 5), [utc(2025, 1, 1)]),
        ("@monthly", utc(2024, 5, 5), [utc(2024, 6, 1)]),
        ("@weekly", utc(2024, 6, 3), [utc(2024, 6, 9)]),
        ("@daily", utc(2024, 6, 3, 5), [utc(2024, 6, 4)]),
        ("@midnight", utc(2024, 6, 3, 5), [utc(2024, 6, 4)]),
        ("@hourly", utc(2024, 6, 3, 5, 1), [utc(2024, 6, 3, 6)]),
        ("  0   12  *  *  *  ", utc(2024, 6, 3, 5), [utc(2024, 6, 3, 12)]),
    ],
)
def test_next_fire_times(spec: str, after: datetime, expected: list[datetime]) -> None:
    assert fires(spec, after, len(expected)) == expected


def test_every_is_aligned_to_the_epoch_so_all_schedulers_agree() -> None:
    assert fires("@every 30s", utc(2024, 1, 1, 12, 0, 10), 3) == [
        utc(2024, 1, 1, 12, 0, 30),
        utc(2024, 1, 1, 12, 1, 0),
        utc(2024, 1, 1, 12, 1, 30),
    ]
    assert fires("@every 1m30s", utc(2024, 1, 1), 2) == [utc(2024, 1, 1, 0, 1, 30), utc(2024, 1, 1, 0, 3)]
    sched = parse("@every 7s")
    assert isinstance(sched, IntervalSchedule) and sched.seconds == 7
    t = sched.next(utc(2024, 1, 1, 0, 0, 0) + timedelta(microseconds=1))
    assert int(t.timestamp()) % 7 == 0
    # the start moment does not matter: two processes started apart fire at the same instants
    a = parse("@every 5s").next(utc(2024, 1, 1, 0, 0, 1))
    b = parse("@every 5s").next(utc(2024, 1, 1, 0, 0, 4) - timedelta(microseconds=1))
    assert a == b == utc(2024, 1, 1, 0, 0, 5)
    # exactly on a fire instant: the next one, never the same
    assert parse("@every 5s").next(utc(2024, 1, 1, 0, 0, 5)) == utc(2024, 1, 1, 0, 0, 10)
    # sub-second parts are dropped, as Go's robfig/cron does
    assert isinstance(s2 := parse("@every 1.5s"), IntervalSchedule) and s2.seconds == 1
    assert isinstance(s3 := parse("@every 1h"), IntervalSchedule) and s3.seconds == 3600


def test_next_is_in_the_schedule_zone_and_honours_it() -> None:
    t = parse("0 9 * * *", BERLIN).next(utc(2024, 1, 15, 12))
    assert t.tzinfo == BERLIN
    assert t == datetime(2024, 1, 16, 9, tzinfo=BERLIN)
    assert t.astimezone(UTC) == utc(2024, 1, 16, 8)
    # +05:30 zone
    assert parse("0 0 * * *", KOLKATA).next(utc(2024, 1, 1, 0, 0)) == utc(2024, 1, 1, 18, 30)
    # CRON_TZ= / TZ= prefix overrides the scheduler's zone
    assert parse("CRON_TZ=America/New_York 0 9 * * *", BERLIN).next(utc(2024, 1, 15)) == utc(2024, 1, 15, 14)
    assert parse("TZ=Asia/Kolkata 0 0 * * *").next(utc(2024, 1, 1)) == utc(2024, 1, 1, 18, 30)


def test_spring_forward_fixed_time_runs_at_the_jump_not_never() -> None:
    # 2024-03-10 02:00 EST -> 03:00 EDT: 02:30 does not exist that day
    got = fires("30 2 * * *", datetime(2024, 3, 10, 0, 0, tzinfo=NY), 3, NY)
    assert [t.isoformat() for t in got] == [
        "2024-03-10T03:00:00-04:00",
        "2024-03-11T02:30:00-04:00",
        "2024-03-12T02:30:00-04:00",
    ]
    # Berlin 2024-03-31 02:00 CET -> 03:00 CEST
    got = fires("15 2 * * *", datetime(2024, 3, 30, 12, tzinfo=BERLIN), 3, BERLIN)
    assert [t.isoformat() for t in got] == [
        "2024-03-31T03:00:00+02:00",
        "2024-04-01T02:15:00+02:00",
        "2024-04-02T02:15:00+02:00",
    ]


def test_spring_forward_hourly_follows_real_time() -> None:
    got = fires("0 * * * *", datetime(2024, 3, 10, 0, 30, tzinfo=NY), 4, NY)
    assert [t.isoformat() for t in got] == [
        "2024-03-10T01:00:00-05:00",
        "2024-03-10T03:00:00-04:00",  # one real hour after 01:00 EST
        "2024-03-10T04:00:00-04:00",
        "2024-03-10T05:00:00-04:00",
    ]


def test_fall_back_fixed_time_runs_once() -> None:
    # 2024-11-03 02:00 EDT -> 01:00 EST: 01:30 happens twice; a daily job runs at the first
    got = fires("30 1 * * *", datetime(2024, 11, 3, 0, 0, tzinfo=NY), 3, NY)
    assert [t.isoformat() for t in got] == [
        "2024-11-03T01:30:00-04:00",
        "2024-11-04T01:30:00-05:00",
        "2024-11-05T01:30:00-05:00",
    ]
    # asked from inside the repeated hour (second pass), it does not run again that day
    second_pass = datetime(2024, 11, 3, 1, 10, tzinfo=NY, fold=1)
    assert parse("30 1 * * *", NY).next(second_pass).isoformat() == "2024-11-04T01:30:00-05:00"


def test_fall_back_wildcard_hour_runs_every_real_interval() -> None:
    got = fires("0 * * * *", datetime(2024, 11, 3, 0, 30, tzinfo=NY), 4, NY)
    assert [t.isoformat() for t in got] == [
        "2024-11-03T01:00:00-04:00",
        "2024-11-03T01:00:00-05:00",
        "2024-11-03T02:00:00-05:00",
        "2024-11-03T03:00:00-05:00",
    ]
    got = fires("*/30 * * * *", datetime(2024, 11, 3, 0, 40, tzinfo=NY), 6, NY)
    # (aware datetimes of one zone subtract as wall clocks in Python, so compare in UTC)
    deltas = {b.astimezone(UTC) - a.astimezone(UTC) for a, b in itertools.pairwise(got)}
    assert deltas == {timedelta(minutes=30)}


def test_half_hour_dst_zone() -> None:
    # Lord Howe: 2024-04-07 02:00 (+11) -> 01:30 (+10:30); 2024-10-06 02:00 (+10:30) -> 02:30 (+11)
    got = fires("45 1 * * *", datetime(2024, 4, 6, 12, tzinfo=LORD_HOWE), 2, LORD_HOWE)
    assert [t.isoformat() for t in got] == ["2024-04-07T01:45:00+11:00", "2024-04-08T01:45:00+10:30"]
    got = fires("15 2 * * *", datetime(2024, 10, 5, 12, tzinfo=LORD_HOWE), 2, LORD_HOWE)
    assert [t.isoformat() for t in got] == ["2024-10-06T02:30:00+11:00", "2024-10-07T02:15:00+11:00"]


@pytest.mark.parametrize("zone", [NY, BERLIN, LORD_HOWE, KOLKATA, ZoneInfo("UTC")], ids=str)
@pytest.mark.parametrize(
    "spec", ["*/7 * * * *", "0 * * * *", "30 2 * * *", "15 1,2,3 * * *", "0 0 * * 0", "*/20 0-3 * * *"]
)
def test_fires_are_increasing_and_match_through_dst_changes(spec: str, zone: ZoneInfo) -> None:
    sched = parse(spec, zone)
    assert isinstance(sched, CronSchedule)
    real_time = spec.split()[1] == "*"
    # just before the 2024 transitions of New York, Berlin and Lord Howe
    starts = [(2024, 3, 9), (2024, 3, 30), (2024, 4, 6), (2024, 10, 5), (2024, 10, 26), (2024, 11, 2)]
    for start in (datetime(*ymd, tzinfo=zone) for ymd in starts):
        t = start
        seen_wall: set[datetime] = set()
        for _ in range(300):
            nxt = sched.next(t)
            assert nxt.astimezone(UTC) > t.astimezone(UTC)  # same-zone comparison ignores fold
            assert nxt.tzinfo == zone
            wall = nxt.replace(tzinfo=None)
            if real_time:
                # every fire is a wall-clock time matching the spec
                assert wall.minute in sched.minutes and wall.hour in sched.hours
                assert sched.matches_day(wall.date())
            else:
                # each wall-clock time fires at most once, even when clocks go back
                key = wall.replace(second=0)
                assert key not in seen_wall
                seen_wall.add(key)
            t = nxt


def test_next_from_a_fire_instant_is_strictly_later() -> None:
    sched = parse("0 12 * * *", BERLIN)
    t = sched.next(utc(2024, 1, 1))
    assert sched.next(t) == t + timedelta(days=1)
    assert sched.next(t - timedelta(microseconds=1)) == t


def test_next_needs_an_aware_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse("* * * * *").next(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        parse("@every 1s").next(datetime(2024, 1, 1))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("* * * *", "expected 5 fields"),
        ("0 * * * * *", "expected 5 fields"),
        ("60 * * * *", "minute field '60': 60 is out of range 0-59"),
        ("* 24 * * *", "hour field '24': 24 is out of range 0-23"),
        ("* * 0 * *", "day-of-month field '0': 0 is out of range 1-31"),
        ("* * 32 * *", "out of range 1-31"),
        ("* * * 13 *", "month field '13'"),
        ("* * * * 8", "day-of-week field '8'"),
        ("*/0 * * * *", "the step must be a positive number"),
        ("*/x * * * *", "the step must be a positive number"),
        ("5-1 * * * *", "range start 5 is after its end 1"),
        ("a * * * *", "'a' is not a number"),
        ("1,,2 * * * *", "empty list item"),
        ("* * * FOO *", "'FOO' is not a number"),
        ("0 0 L * *", "L, W and # are not supported"),
        ("0 0 * * 5#3", "L, W and # are not supported"),
        ("0 0 30 2 *", "never occurs"),
        ("0 0 31 4,6 *", "never occurs"),
        ("@every", "@every needs a duration"),
        ("@every 0s", "at least 1s"),
        ("@every 500ms", "at least 1s"),
        ("@every -5s", "at least 1s"),
        ("@every 5x", "invalid duration"),
        ("@every 5", "invalid duration"),
        ("@everyday", "unknown descriptor"),
        ("@reboot", "unknown descriptor"),
        ("CRON_TZ=Mars/Olympus 0 0 * * *", "unknown time zone 'Mars/Olympus'"),
        ("CRON_TZ=UTC", "nothing after"),
    ],
)
def test_invalid_specs_raise_a_clear_value_error(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match="invalid cron spec") as info:
        parse(spec)
    assert message in str(info.value)
    if spec.strip():
        assert repr(spec) in str(info.value)  # the message names the spec


def test_feb_30_with_a_weekday_is_valid_because_either_day_field_matches() -> None:
    # the month still applies: Mondays in February
    assert parse("0 0 30 2 MON").next(utc(2024, 6, 4)) == utc(2025, 2, 3)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", Decimal(30)),
        ("1m30s", Decimal(90)),
        ("1h", Decimal(3600)),
        ("1.5h", Decimal(5400)),
        ("2h45m", Decimal(9900)),
        ("500ms", Decimal("0.5")),
        ("1500us", Decimal("0.0015")),
        ("1500µs", Decimal("0.0015")),
        ("0", Decimal(0)),
        (".5s", Decimal("0.5")),
        ("-1m", Decimal(-60)),
    ],
)
def test_go_durations(text: str, seconds: Decimal) -> None:
    assert parse_go_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "1", "1d", "1 m", "m1"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_go_duration(text)
