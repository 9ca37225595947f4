"""The dashboard over plain HTTP (httpx's ASGI transport, no browser) against real Redis: every page
renders tasks in every state, actions need confirming and change Redis, read-only and cross-site
POSTs are refused, and bad input gets a clear 4xx page instead of a traceback."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from html import escape, unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from conftest import RedisTarget
from fastapi import FastAPI
from test_inspector import Populated, populate
from typer.testing import CliRunner
from workerproc import conn_opt

from asynq_aio import (
    Client,
    Inspector,
    QueueNotFoundError,
    RedisClientOpt,
    RetryPolicy,
    Task,
    TaskNotFoundError,
    TaskState,
)
from asynq_aio._devcluster import find_free_port_base
from asynq_aio._inspection import DailyStats
from asynq_aio.cli.app import app as cli
from asynq_aio.cli.web import is_loopback
from asynq_aio.web import create_app, present
from asynq_aio.web.chart import daily_totals, history_svg

pytestmark = pytest.mark.anyio

BASE = "http://dash"


@pytest.fixture
async def insp(redis_target: RedisTarget) -> AsyncIterator[Inspector]:
    async with Inspector(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)) as i:
        yield i


@dataclass(frozen=True)
class Pop(Populated):
    """populate()'s tasks, plus one whose ID no other queue has (to find it by ID alone)."""

    unique_id: str = ""


async def pop_in(client: Client, queue: str) -> Pop:
    base = await populate(client, queue)
    unique_id = f"u-{uuid.uuid4().hex}"
    await client.enqueue(Task("t:unique", {"n": 1}), queue=queue, task_id=unique_id, process_in=3600)
    return Pop(**vars(base), unique_id=unique_id)


@pytest.fixture
async def pop(client: Client, unique_queue: str) -> Pop:
    return await pop_in(client, unique_queue)


def http_for(insp: Inspector, **kwargs: object) -> httpx.AsyncClient:
    app = create_app(insp, **kwargs)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


def token_of(html: str) -> str:
    found = re.search(r'name="token" value="([^"]+)"', html)
    assert found, "no form token on the page"
    return found.group(1)


def text(html: str) -> str:
    """The page's visible text, roughly: tags dropped, entities decoded, spaces collapsed."""
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


async def test_every_page_shows_what_redis_holds(
    insp: Inspector, pop: Pop, redis_target: RedisTarget
) -> None:
    q = pop.queue
    async with http_for(insp) as http:
        home = await http.get("/")
        assert home.status_code == 200
        assert f'href="/queue?q={q}"' in home.text
        assert "<svg" in home.text and "processed" in home.text  # the inline chart
        assert home.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in home.headers["content-security-policy"]

        expected = {
            "pending": pop.pending,
            "active": [pop.active],
            "scheduled": [*pop.scheduled[:1], pop.unique_id, *pop.scheduled[1:]],
            "retry": [pop.retry],
            "archived": [pop.archived],
            "completed": [pop.completed],
            "aggregating": pop.aggregating,
        }
        for state, ids in expected.items():
            page = await http.get("/queue", params={"q": q, "state": state})
            assert page.status_code == 200, page.text
            shown = re.findall(r'href="/task\?q=[^&"]+&amp;id=([^"]+)"', page.text)
            assert shown == ids, (state, shown)
        retry_page = text((await http.get("/queue", params={"q": q, "state": "retry"})).text)
        assert "boom" in retry_page and "1/5" in retry_page

        # one page at a time: size 2 shows two pending tasks and a link to the next page
        first = await http.get("/queue", params={"q": q, "state": "pending", "size": 2})
        assert re.findall(r"&amp;id=(pending-\d)", first.text) == pop.pending[:2]
        assert "Page 1 of 2" in text(first.text) and 'rel="next"' in first.text
        second = await http.get("/queue", params={"q": q, "state": "pending", "size": 2, "page": 2})
        assert re.findall(r"&amp;id=(pending-\d)", second.text) == pop.pending[2:]

        detail = await http.get("/task", params={"q": q, "id": pop.completed})
        body = text(detail.text)
        assert "the result" in body and "completed" in body
        pretty = await http.get("/task", params={"q": q, "id": pop.pending[0]})
        assert "{\n  &#34;id&#34;: &#34;pending-0&#34;\n}" in pretty.text  # JSON payload, indented

        found = await http.get("/search", params={"id": pop.unique_id})
        assert found.status_code == 303
        assert found.headers["location"] == f"/task?q={q}&id={pop.unique_id}"
        # an ID in several queues: the page asks for the queue
        dup = f"d-{uuid.uuid4().hex}"
        async with Client(conn_opt(redis_target.kind, redis_target.url, redis_target.addrs)) as c:
            for where in (q, q + "_twin"):
                await c.enqueue(Task("t:dup"), queue=where, task_id=dup, process_in=3600)
        several = await http.get("/search", params={"id": dup})
        assert several.status_code == 409 and "name the queue" in several.text

        stats = (await http.get("/api/stats", params={"q": q})).json()
        assert list(stats["queues"]) == [q]
        assert stats["queues"][q]["pending"] == 3 and stats["queues"][q]["aggregating"] == 2

        for path in ("/servers", "/scheduler", "/redis", "/search"):
            assert (await http.get(path)).status_code == 200, path
        redis_page = text((await http.get("/redis")).text)
        if redis_target.kind == "cluster":
            (loc,) = await insp.cluster_locations([q])
            assert f"{q} {loc.slot} {loc.nodes[0].addr} master" in redis_page
        else:
            assert "Where each queue lives" not in redis_page


async def test_actions_need_a_confirm_step_then_change_redis(
    single_redis_url: str, unique_queue: str
) -> None:
    async with Client(conn_opt("single", single_redis_url, None)) as client:
        pop = await populate(client, unique_queue)
    q = pop.queue
    async with Inspector(conn_opt("single", single_redis_url, None)) as insp, http_for(insp) as http:
        page = await http.get("/queue", params={"q": q, "state": "archived"})
        token = token_of(page.text)
        form = {
            "token": token,
            "op": "run",
            "target": "task",
            "q": q,
            "state": "archived",
            "id": pop.archived,
        }

        confirm = await http.post("/action", data=form)
        assert confirm.status_code == 200
        assert f'Run archived task "{pop.archived}"' in text(confirm.text)
        assert (await insp.get_task_info(q, pop.archived)).state is TaskState.ARCHIVED  # not yet

        done = await http.post("/action", data={**form, "confirmed": "yes"})
        assert done.status_code == 200 and "moved to pending" in text(done.text)
        assert (await insp.get_task_info(q, pop.archived)).state is TaskState.PENDING

        # the selected tasks, then all tasks in a state
        sel = {"token": token, "op": "archive", "target": "selected", "q": q, "state": "pending"}
        picked = [("id", pop.pending[0]), ("id", pop.pending[1])]
        body = list(sel.items()) + picked + [("confirmed", "yes")]
        done = await http.post("/action", content=urlencode(body), headers=_form_headers())
        assert "2 of 2 selected task(s) archived" in text(done.text)
        for tid in pop.pending[:2]:
            assert (await insp.get_task_info(q, tid)).state is TaskState.ARCHIVED

        every = {
            "token": token,
            "op": "delete",
            "target": "all",
            "q": q,
            "state": "archived",
            "confirmed": "yes",
        }
        done = await http.post("/action", data=every)
        assert "2 archived task(s) deleted" in text(done.text)
        assert (await insp.get_queue_info(q)).archived == 0

        for op, paused in (("pause", True), ("unpause", False)):
            qf = {"token": token, "op": op, "target": "queue", "q": q, "confirmed": "yes"}
            assert (await http.post("/action", data=qf)).status_code == 200
            assert (await insp.get_queue_info(q)).paused is paused

        # a waiting task "cancelled" is deleted (a running one gets the signal: see the browser test)
        cancel = {
            "token": token,
            "op": "cancel",
            "target": "task",
            "q": q,
            "state": "active",
            "id": pop.active,
        }
        done = await http.post("/action", data={**cancel, "confirmed": "yes"})
        assert "cancel signal" in text(done.text)


def _form_headers() -> dict[str, str]:
    return {"content-type": "application/x-www-form-urlencoded"}


async def test_read_only_hides_actions_and_refuses_them(insp: Inspector, pop: Pop) -> None:
    q = pop.queue
    writable = create_app(insp)
    token = writable.state.dashboard.token
    async with http_for(insp, read_only=True, secret=token) as http:
        page = await http.get("/queue", params={"q": q, "state": "archived"})
        assert page.status_code == 200 and pop.archived in page.text
        assert 'method="post"' not in page.text and "Read-only" in text(page.text)
        detail = await http.get("/task", params={"q": q, "id": pop.archived})
        assert "<button" not in detail.text.split("<main", 1)[1]
        form = {"token": token, "op": "delete", "target": "task", "q": q, "state": "archived"}
        for extra in ({}, {"confirmed": "yes"}):
            refused = await http.post("/action", data={**form, "id": pop.archived, **extra})
            assert refused.status_code == 403 and "read-only" in refused.text
        refused = await http.post("/action", data={"token": token, "op": "pause", "target": "queue", "q": q})
        assert refused.status_code == 403
    assert (await insp.get_task_info(q, pop.archived)).state is TaskState.ARCHIVED
    assert (await insp.get_queue_info(q)).paused is False


async def test_cross_site_posts_are_refused(insp: Inspector, pop: Pop) -> None:
    q = pop.queue
    async with http_for(insp) as http:
        token = token_of((await http.get("/queue", params={"q": q, "state": "archived"})).text)
        form = {
            "op": "delete",
            "target": "task",
            "q": q,
            "state": "archived",
            "id": pop.archived,
            "confirmed": "yes",
        }
        cases = [
            ({**form, "token": token}, {"origin": "https://evil.example"}, "cross-site"),
            ({**form, "token": token}, {"origin": "null"}, "cross-site"),
            ({**form, "token": token}, {"referer": "https://evil.example/page"}, "cross-site"),
            (form, {}, "token is missing"),
            ({**form, "token": token + "x"}, {}, "token is missing or stale"),
        ]
        for data, headers, says in cases:
            resp = await http.post("/action", data=data, headers=headers)
            assert resp.status_code == 403, (headers, resp.text)
            assert says in text(resp.text)
        assert (await insp.get_task_info(q, pop.archived)).state is TaskState.ARCHIVED
        same = await http.post("/action", data={**form, "token": token}, headers={"origin": BASE})
        assert same.status_code == 200
    with pytest.raises(TaskNotFoundError):
        await insp.get_task_info(q, pop.archived)


async def test_bad_input_gets_a_clear_page(insp: Inspector, pop: Pop) -> None:
    q = pop.queue
    async with http_for(insp) as http:
        token = token_of((await http.get("/queue", params={"q": q})).text)
        gets = [
            ("/queue", {"q": "no_such_queue_x"}, 404, 'queue "no_such_queue_x" not found'),
            ("/queue", {}, 400, 'the "q" parameter is missing'),
            ("/queue", {"q": q, "page": "0"}, 400, '"page" must be from 1'),
            ("/queue", {"q": q, "page": "-3"}, 400, '"page" must be from 1'),
            ("/queue", {"q": q, "page": "two"}, 400, '"page" must be a whole number'),
            ("/queue", {"q": q, "size": "100000"}, 400, '"size" must be from 1 to 200'),
            ("/queue", {"q": q, "page": "9"}, 404, "Page 9 is past the last page (1)"),
            ("/queue", {"q": q, "state": "bogus"}, 400, "unknown task state 'bogus'"),
            ("/queue", {"q": q, "state": "aggregating", "group": "nope"}, 200, 'Group "nope" has no tasks'),
            ("/queue", {"q": "x" * 2000}, 400, "longer than 1024"),
            ("/task", {"q": q, "id": "no-such-task"}, 404, "not found"),
            ("/task", {"q": "no_such_queue_x", "id": "x"}, 404, "not found"),
            ("/search", {"id": "no-such-task-anywhere"}, 404, 'No task with ID "no-such-task-anywhere"'),
            ("/scheduler/history", {"entry": "e", "page": "0"}, 400, '"page" must be from 1'),
        ]
        for path, params, status, says in gets:
            resp = await http.get(path, params=params)
            assert resp.status_code == status, (path, params, resp.status_code)
            assert says in text(resp.text), (path, params, text(resp.text)[:300])
            assert "Traceback" not in resp.text
        base = {"token": token, "q": q, "confirmed": "yes"}
        posts = [
            (
                {**base, "op": "explode", "target": "task", "state": "pending", "id": "x"},
                400,
                "unknown action",
            ),
            ({**base, "op": "run", "target": "task", "state": "pending", "id": "x"}, 400, "cannot be moved"),
            ({**base, "op": "run", "target": "everything"}, 400, "unknown target"),
            ({**base, "op": "archive", "target": "selected", "state": "pending"}, 400, "select at least one"),
            ({**base, "op": "run", "target": "task", "state": "archived", "id": "gone"}, 404, "not found"),
            ({**base, "op": "pause", "target": "queue", "q": "no_such_queue_x"}, 404, "not found"),
        ]
        for data, status, says in posts:
            resp = await http.post("/action", data=data)
            assert resp.status_code == status, (data, resp.text)
            assert says in text(resp.text), (data, text(resp.text)[:300])
        raw = await http.post("/action", content=b"{}", headers={"content-type": "application/json"})
        assert raw.status_code == 400 and "x-www-form-urlencoded" in raw.text
    with pytest.raises(ValueError, match="refresh_seconds"):
        create_app(insp, refresh_seconds=0)
    with pytest.raises(ValueError, match="at least 16"):
        create_app(insp, secret="short")


async def test_mounted_under_a_path_every_link_keeps_the_prefix(insp: Inspector, pop: Pop) -> None:
    host = FastAPI()
    host.mount("/ops/asynq", create_app(insp))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host), base_url=BASE) as http:
        for path, params in (("/", {}), ("/queue", {"q": pop.queue, "state": "retry"})):
            page = await http.get("/ops/asynq" + path, params=params)
            assert page.status_code == 200
            targets = re.findall(r'(?:href|action|src|content)="(/[^"]*)"', page.text)
            assert targets and all(t.startswith("/ops/asynq/") for t in targets), targets
            for t in {t for t in targets if "/static/" in t or "/api/" in t}:
                assert (await http.get(unescape(t))).status_code == 200, t
        found = await http.get("/ops/asynq/search", params={"id": pop.unique_id})
        assert found.headers["location"].startswith("/ops/asynq/task?")


DOCS = Path(__file__).resolve().parent.parent / "docs" / "dashboard.md"
CSS = Path(__file__).resolve().parent.parent / "asynq_aio" / "web" / "static" / "dashboard.css"


async def test_the_docs_basic_auth_block_guards_the_dashboard(insp: Inspector, pop: Pop) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text("utf-8"), re.S)
    (auth,) = [b for b in blocks if "def basic_auth" in b]
    namespace: dict[str, Any] = {}
    exec(compile(auth, str(DOCS), "exec"), namespace)
    host = FastAPI()
    host.mount("/asynq", namespace["basic_auth"](create_app(insp), "ops", "s3cret"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host), base_url=BASE) as http:
        denied = await http.get("/asynq/queue", params={"q": pop.queue})
        assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Basic")
        wrong = await http.get("/asynq/", auth=("ops", "guess"))
        assert wrong.status_code == 401
        ok = await http.get(
            "/asynq/queue", params={"q": pop.queue, "state": "scheduled"}, auth=("ops", "s3cret")
        )
        assert ok.status_code == 200 and pop.unique_id in ok.text


def _luminance(hex_colour: str) -> float:
    rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_text_colours_meet_wcag_aa_contrast() -> None:
    """The stylesheet's text colours against the backgrounds they are drawn on: at least 4.5:1."""
    css = CSS.read_text("utf-8")
    var = dict(re.findall(r"--([\w-]+):\s*(#[0-9a-fA-F]{6})", css))
    pairs = [
        ("fg", "bg"), ("muted", "bg"), ("muted", "panel"), ("accent", "bg"), ("accent", "panel"),
        ("bad", "bg"), ("ok", "ok-bg"), ("bad", "bad-bg"), ("warn", "warn-bg"), ("fg", "panel"),
    ]  # fmt: skip
    low = {
        f"{a} on {b}": round(contrast(var[a], var[b]), 2) for a, b in pairs if contrast(var[a], var[b]) < 4.5
    }
    assert not low, low
    assert contrast("#ffffff", "#111827") >= 4.5  # the header bar
    assert contrast("#ffffff", var["accent"]) >= 4.5  # the primary button


def test_the_web_command_listens_on_loopback_unless_told_otherwise() -> None:
    runner = CliRunner()
    refused = runner.invoke(cli, ["web", "--host", "0.0.0.0", "--redis-url", "redis://127.0.0.1:1/0"])
    assert refused.exit_code == 1
    assert "no login" in refused.output and "--allow-remote" in refused.output
    bad_root = runner.invoke(cli, ["web", "--root-path", "asynq/", "--redis-url", "redis://127.0.0.1:1/0"])
    assert bad_root.exit_code == 1 and "--root-path must start with /" in bad_root.output
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.com")


def test_payloads_are_shown_as_json_text_or_hex() -> None:
    assert present.payload(b'{"a":[1,2]}') == present.Payload(
        "json", '{\n  "a": [\n    1,\n    2\n  ]\n}', 11, False
    )
    assert present.payload("héllo\nworld".encode()).kind == "text"
    binary = present.payload(bytes(range(40)))
    assert binary.kind == "binary" and binary.text.startswith("00000000  00 01 02")
    assert present.payload(b"") == present.Payload("empty", "", 0, False)
    assert present.payload(None).kind == "empty"
    big = present.payload(b"x" * (present.DETAIL_BYTES + 10))
    assert big.kind == "text" and big.truncated and len(big.text) == present.DETAIL_BYTES
    assert present.preview(b'{\n  "a": 1\n}') == '{ "a": 1 }'
    assert present.preview(b"\xff\xfe") == "2 bytes (binary)"
    assert present.preview(b"y" * 200, limit=10) == "yyyyyyyyy…"


def test_the_chart_draws_one_bar_per_day_with_failed_on_top() -> None:
    today = date(2026, 12, 7)
    rows = [DailyStats("a", today, 30, 10), DailyStats("b", today, 10, 0)]
    rows += [DailyStats("a", today - timedelta(days=1), 0, 0)]
    days = daily_totals(rows)
    assert days == [(today - timedelta(days=1), 0, 0), (today, 40, 10)]
    svg = str(history_svg(days, label="All <queues>"))
    assert svg.count('class="bar-ok"') == 2 and svg.count('class="bar-failed"') == 1
    assert "2026-12-07: 40 processed, 10 failed" in svg
    assert 'aria-label="All &lt;queues&gt;: 40 processed, 10 failed over 2 days"' in svg
    heights = [
        float(h)
        for h in re.findall(r'class="bar-\w+" x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)"', svg)
    ]
    assert heights[1] == pytest.approx(4 * heights[2])  # 40 processed is 4x the 10 failed


async def test_an_unreachable_redis_gets_a_503_page_not_a_traceback() -> None:
    dead = RedisClientOpt(addr=f"127.0.0.1:{find_free_port_base(1)}")
    async with Inspector(dead, retry=RetryPolicy(budget=0.5)) as down, http_for(down) as http:
        for path in ("/", "/api/stats"):
            resp = await http.get(path)
            assert resp.status_code == 503, (path, resp.text[:200])
            assert "Redis" in text(resp.text) and "Traceback" not in resp.text


async def test_inspector_histories_match_history_of_each_queue(
    insp: Inspector, pop: Pop, client: Client
) -> None:
    other = pop.queue + "_b"
    await client.enqueue(Task("x"), queue=other)
    got = await insp.histories([pop.queue, other], days=3)
    assert got == {q: await insp.history(q, 3) for q in (pop.queue, other)}
    today = got[pop.queue][0]
    assert (today.processed, today.failed) == (3, 2)  # populate's outcomes
    everything = await insp.histories()
    assert pop.queue in everything and len(everything[other]) == 7
    with pytest.raises(QueueNotFoundError, match="no_such_queue_h"):
        await insp.histories([pop.queue, "no_such_queue_h"])
    with pytest.raises(ValueError, match="days"):
        await insp.histories([pop.queue], days=0)
    assert await insp.histories([]) == {}
    infos = await insp.get_queue_infos_with_memory([pop.queue, other])
    assert [i.queue for i in infos] == [pop.queue, other]
    assert all(i.memory_usage is not None and i.memory_usage > 0 for i in infos)
    assert infos[0].pending == (await insp.get_queue_info(pop.queue)).pending


async def test_names_and_payloads_from_redis_are_escaped(single_redis_url: str, unique_queue: str) -> None:
    """A producer chooses queue names, task types and payloads: none of them can inject markup."""
    opt = conn_opt("single", single_redis_url, None)
    queue = unique_queue + '"<b>&/x'
    evil = "<script>alert(1)</script>"
    async with Client(opt) as c:
        info = await c.enqueue(Task(evil, f'{{"html": "{evil}"}}'.encode()), queue=queue, process_in=600)
    async with Inspector(opt) as insp, http_for(insp) as http:
        pages = [
            await http.get("/"),
            await http.get("/queue", params={"q": queue, "state": "scheduled"}),
            await http.get("/task", params={"q": queue, "id": info.id}),
        ]
        for page in pages:
            assert page.status_code == 200
            assert evil not in page.text and "<b>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[2].text
        # the queue name survives the round trip through a link
        href = "/queue?" + urlencode({"q": queue})
        assert f'href="{escape(href)}"' in pages[0].text
        followed = await http.get(href + "&state=scheduled")
        assert followed.status_code == 200 and info.id in followed.text
        assert f"Queue {queue} " in text(followed.text)
        assert (await http.get("/action")).status_code == 405  # no GET changes anything
