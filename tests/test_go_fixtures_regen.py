"""The committed Go fixtures are reproducible: scripts/regen-go-fixtures.sh re-records them with the
real Go Asynq v0.26.0 (tests/go/record) into a temp dir, and the fresh files have the committed
files' structure: the same records in the same order, the same key names and types (modulo task IDs,
server IDs and dates), the same hash fields, protobuf field numbers, option strings and counters.

Values that depend on the clock or on random IDs (scores, TTLs, pending_since, UUIDs) are compared
only by kind. cli.txt and cli.json are not re-recorded: they need Go's CLI, which the module proxy
does not serve (see tests/fixtures/asynq-go-0.26/README.md).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from gofixtures import FIXTURES_DIR, b64, parse_decode_raw
from golive import REQUIRE_GO_ENV, SKIP_REASON

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "regen-go-fixtures.sh"
RECORDED = ("tasks.json", "stats.json", "servers.json")

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SERVER = re.compile(r"\{[^{}:]+:\d+:<id>\}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME_OPTION = re.compile(r"^(ProcessAt|Deadline)\(.*\)$")


def norm(text: str) -> str:
    """A key or member with its task IDs, server IDs (host:pid:uuid) and dates made generic."""
    return _DATE.sub("<date>", _SERVER.sub("{<server>}", _UUID.sub("<id>", text)))


def ttl_kind(pttl_ms: int) -> str:
    return "none" if pttl_ms == -1 else "ttl"


def fields(decode_raw: str) -> list[int]:
    """The top-level protobuf field numbers, in wire order."""
    return [num for num, _ in parse_decode_raw(decode_raw)]


def map_keys(value: dict[str, Any]) -> list[str]:
    return sorted(norm(k) for k in value)


def task_shape(rec: dict[str, Any]) -> dict[str, Any]:
    inputs = rec["go_inputs"]
    hash_msg = b64(rec["hash"]["msg"])
    return {
        "queue": rec["queue"],
        "task_id": norm(rec["task_id"]),
        "keys": sorted((norm(k), v["type"], ttl_kind(v["pttl_ms"])) for k, v in rec["redis_keys"].items()),
        "hash_key": norm(rec["hash_key"]),
        "hash_fields": sorted(rec["hash"]),
        "state": rec["hash"]["state"]["utf8"],
        "msg_fields": fields(rec["msg_decoded"]),
        "msg_len_class": "nonempty" if hash_msg else "empty",
        "zsets": {norm(k): sorted(norm(m) for m in v) for k, v in rec["zsets"].items()},
        "lists": {norm(k): len(v) for k, v in rec["lists"].items()},
        "strings": {
            norm(k): (v["value"].get("utf8") if "unique" not in k and "paused" not in k else "<v>")
            for k, v in rec.get("strings", {}).items()
        },
        "sets": {norm(k): v for k, v in rec.get("sets", {}).items()},
        "other_hashes": sorted((norm(k), sorted(v)) for k, v in rec.get("other_hashes", {}).items()),
        "global_keys": rec["global_keys"],
        "type": inputs["type"],
        "payload": inputs["payload"],
        "headers": inputs.get("headers"),
        "options": [_TIME_OPTION.sub(r"\1(<time>)", o) for o in inputs["options"]],
        "handler": "handler" in inputs,
    }


def stats_shape(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "counters": {
            norm(k): (v["type"], v["value"], ttl_kind(v["pttl_ms"])) for k, v in doc["counters"].items()
        },
        "fx_stats_all_keys": sorted((norm(k), t) for k, t in doc["fx_stats_all_keys"].items()),
    }


def snapshot_shape(snap: dict[str, Any]) -> dict[str, Any]:
    def members(zset: dict[str, Any]) -> list[str]:
        return sorted(norm(m["member"]) for m in zset["members"])

    return {
        "keys": sorted(snap),
        "servers": members(snap["asynq:servers"]),
        "workers": members(snap["asynq:workers"]),
        "lease": members(snap["asynq:{fx_active}:lease"]),
        "server_info": {norm(k): fields(v["decode_raw"]) for k, v in snap["server_info_keys"].items()},
        "server_info_ttl": {norm(k): ttl_kind(v["pttl_ms"]) for k, v in snap["server_info_keys"].items()},
        "worker_info": {
            norm(k): sorted(fields(f["decode_raw"]) for f in v["fields"].values())
            for k, v in snap["worker_keys"].items()
        },
        "active": len(snap["asynq:{fx_active}:active"]),
        "pending": len(snap["asynq:{fx_active}:pending"]),
        "queues": snap["asynq:queues"],
        "fx_active_keys": sorted((norm(k), t) for k, t in snap["keys_for_queue_fx_active"].items()),
        "fx_idle_keys": snap["keys_for_queue_fx_idle"],
    }


def servers_shape(doc: dict[str, Any]) -> dict[str, Any]:
    after = doc["after_worker_exit"]
    return {
        "snapshots": [snapshot_shape(s) for s in doc["snapshots"]],
        "left": after["server_and_worker_keys_left"],
        "exists": (after["asynq:servers_exists"], after["asynq:workers_exists"]),
    }


def load(directory: Path, name: str) -> Any:
    return json.loads((directory / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("go") is None:
        if os.environ.get(REQUIRE_GO_ENV) == "1":
            pytest.fail(f"{REQUIRE_GO_ENV}=1 but `go` is not on PATH")
        pytest.skip(SKIP_REASON)
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    out = tmp_path_factory.mktemp("go-fixtures")
    done = subprocess.run(
        [str(SCRIPT), str(out)], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, f"{SCRIPT} failed:\n{done.stdout}\n{done.stderr}"
    assert sorted(p.name for p in out.iterdir()) == sorted(RECORDED)
    return out


@pytest.mark.slow
def test_recorded_tasks_have_the_committed_structure(recorded: Path) -> None:
    fresh = [task_shape(r) for r in load(recorded, "tasks.json")]
    committed = [task_shape(r) for r in load(FIXTURES_DIR, "tasks.json")]
    assert [r["queue"] for r in fresh] == [r["queue"] for r in committed]
    for got, want in zip(fresh, committed, strict=True):
        assert got == want, want["queue"]


@pytest.mark.slow
def test_recorded_header_maps_match(recorded: Path) -> None:
    """Go does not sort map entries: field 15's bytes may differ, the decoded entries may not."""
    for name in ("fx_headers", "fx_headers_multi"):
        (fresh,) = [r for r in load(recorded, "tasks.json") if r["queue"] == name]
        (committed,) = [r for r in load(FIXTURES_DIR, "tasks.json") if r["queue"] == name]

        def headers(rec: dict[str, Any]) -> list[Any]:
            return sorted(repr(v) for n, v in parse_decode_raw(rec["msg_decoded"]) if n == 15)

        assert headers(fresh) == headers(committed)


@pytest.mark.slow
def test_recorded_counters_have_the_committed_structure(recorded: Path) -> None:
    assert stats_shape(load(recorded, "stats.json")) == stats_shape(load(FIXTURES_DIR, "stats.json"))


@pytest.mark.slow
def test_recorded_server_state_has_the_committed_structure(recorded: Path) -> None:
    fresh, committed = load(recorded, "servers.json"), load(FIXTURES_DIR, "servers.json")
    assert servers_shape(fresh) == servers_shape(committed)
    # the heartbeat refreshed the server key between the two snapshots, as in the committed run
    (s0, s1) = (next(iter(s["server_info_keys"].values()))["pttl_ms"] for s in fresh["snapshots"])
    t0, t1 = (s["captured_at_unix_ms"] for s in fresh["snapshots"])
    assert t1 - t0 > 5000 and s1 > s0 - (t1 - t0) + 1000
