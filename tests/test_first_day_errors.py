"""Configuration mistakes fail at once with one line that names the address, and the CLI's rough
edges of a first day (issue #14, items 3 and 7), against real redis-server processes.

"At once" is asserted as well under 5 s: the retry budget these mistakes used to burn is 30 s
(5 s in the CLI), so a regression to retrying shows up as a failure, not as a slow test.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from conftest import RunningCluster
from redis import exceptions as rx
from test_security import redis_server
from typer.testing import CliRunner, Result
from workerproc import wait_until

from asynq_aio import (
    Client,
    Config,
    Inspector,
    RedisAuthError,
    RedisClientOpt,
    RedisClusterClientOpt,
    RedisConfigError,
    Scheduler,
    ServeMux,
    Server,
    Task,
    TaskState,
    parse_redis_url,
)
from asynq_aio._connection import InvalidRedisURL, RedisConnOpt
from asynq_aio._devcluster import find_free_port_base
from asynq_aio.cli.app import app
from asynq_aio.protocol._redis.errors import is_transient

runner = CliRunner()
FAST = 5.0  # seconds: well under the retry budgets (30 s library, 5 s CLI)
NO_CONNECTION_ENV: dict[str, str | None] = dict.fromkeys(
    ["ASYNQ_REDIS_URL", "ASYNQ_CLUSTER_ADDRS", "ASYNQ_REDIS_USERNAME", "ASYNQ_REDIS_PASSWORD"]
)
PASSWORD = "first-day-secret"


def host_port(url: str) -> str:
    opt = parse_redis_url(url)
    assert isinstance(opt, RedisClientOpt)
    return opt.addr


def invoke(*args: str, **env: str) -> tuple[Result, float]:
    start = time.monotonic()
    result = runner.invoke(app, list(args), env={**NO_CONNECTION_ENV, "COLUMNS": "200", **env})
    return result, time.monotonic() - start


def one_error_line(result: Result) -> str:
    """The CLI's whole output for an expected failure: exit 1, one ``error:`` line, no traceback."""
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


async def serve_error(opt: RedisConnOpt, queue: str) -> tuple[BaseException, float]:
    """What ``Server.serve`` raises for ``opt``, and how long it took."""
    server = Server(opt, Config(queues={queue: 1}, concurrency=1))
    start = time.monotonic()
    with pytest.raises(Exception) as caught:
        async with server.serve(ServeMux()):
            pass
    return caught.value, time.monotonic() - start


def queue_elsewhere(cluster: RunningCluster, port: int) -> str:
    """A queue name whose slot the node on ``port`` does not serve (a redis:// client there gets MOVED)."""
    mine = next(s.slots for s in cluster.cluster.status() if s.port == port)
    assert mine, "the first seed must be a master"
    for _ in range(1000):
        name = f"fd_{uuid.uuid4().hex[:8]}"
        slot = Inspector.queue_slot(name)
        if not any(lo <= slot <= hi for lo, hi in mine):
            return name
    raise AssertionError("no queue outside the node's slots")


# -- (a) a single-node URL pointed at a cluster node ------------------------------------------------


@pytest.mark.anyio
async def test_redis_url_at_a_cluster_node_fails_at_once(redis_cluster: RunningCluster) -> None:
    addr = redis_cluster.addrs[0]
    opt = parse_redis_url(f"redis://{addr}/0")
    wanted = f"{addr} is a Redis Cluster node: use redis-cluster://host:port,... or RedisClusterClientOpt"
    queue = queue_elsewhere(redis_cluster, int(addr.rsplit(":", 1)[1]))

    # the start-up check of a worker and of a scheduler
    exc, took = await serve_error(opt, queue)
    assert isinstance(exc, RedisConfigError) and str(exc) == wanted and took < FAST
    sched = Scheduler(opt)
    start = time.monotonic()
    with pytest.raises(RedisConfigError, match=re.escape(wanted)):
        async with sched.serve():
            pass
    assert time.monotonic() - start < FAST

    # without a start-up check: the first MOVED reply is the error, not a reason to retry
    async with Client(opt) as client:
        start = time.monotonic()
        with pytest.raises(RedisConfigError, match=re.escape(wanted)):
            await client.enqueue(Task("fd:probe", b""), queue=queue)
        assert time.monotonic() - start < FAST
        with pytest.raises(RedisConfigError, match=re.escape(wanted)):
            await client.ping()

    # the CLI: one line, at once
    result, took = await anyio.to_thread.run_sync(
        lambda: invoke("queue", "inspect", queue, "--redis-url", f"redis://{addr}/0")
    )
    assert one_error_line(result) == f"error: {wanted}" and took < FAST


def test_moved_is_transient_only_for_a_cluster_client() -> None:
    moved = rx.MovedError("3999 127.0.0.1:6381")
    assert is_transient(moved, cluster=True)
    assert not is_transient(moved, cluster=False)


@pytest.mark.anyio
async def test_redis_url_at_a_standalone_redis_still_starts(single_redis_url: str, unique_queue: str) -> None:
    """The start-up check must not refuse the right kind of server (INFO says cluster mode off)."""
    server = Server(parse_redis_url(single_redis_url), Config(queues={unique_queue: 1}, concurrency=1))
    async with server.serve(ServeMux()):
        pass


# -- (b) cluster options pointed at a standalone Redis ----------------------------------------------


@pytest.mark.anyio
async def test_cluster_options_at_a_standalone_redis_fail_at_once(
    single_redis_url: str, unique_queue: str
) -> None:
    addr = host_port(single_redis_url)
    wanted = (
        f"{addr} is not a Redis Cluster node (cluster mode is off): use redis://host:port or RedisClientOpt"
    )
    for opt in (RedisClusterClientOpt(addrs=[addr]), parse_redis_url(f"redis-cluster://{addr}")):
        exc, took = await serve_error(opt, unique_queue)
        assert isinstance(exc, RedisConfigError) and str(exc) == wanted and took < FAST, exc
        async with Client(opt) as client:
            start = time.monotonic()
            with pytest.raises(RedisConfigError, match=re.escape(wanted)):
                await client.enqueue(Task("fd:probe", b""), queue=unique_queue)
            assert time.monotonic() - start < FAST

    # a second seed that is down: redis-py reports the standalone one once it has tried both
    dead = f"127.0.0.1:{find_free_port_base(1)}"
    exc, took = await serve_error(RedisClusterClientOpt(addrs=[addr, dead]), unique_queue)
    assert isinstance(exc, RedisConfigError) and took < FAST, exc
    assert str(exc) == (
        f"none of the seed nodes {addr},{dead} answered as a Redis Cluster node (cluster mode is off): "
        "use redis://host:port or RedisClientOpt"
    )

    result, took = await anyio.to_thread.run_sync(lambda: invoke("queue", "ls", "--cluster-addrs", addr))
    assert one_error_line(result) == f"error: {wanted}" and took < FAST


# -- (c) a wrong password or user -------------------------------------------------------------------


@dataclass
class PasswordRedis:
    port: int

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PasswordRedis]:
    """A redis-server of its own whose default user needs a password, plus an ACL user that may
    not read the cluster slot map (test_security's redis_server starts and stops it)."""
    lines = [f"requirepass {PASSWORD}", f"user nocluster on >{PASSWORD} ~* &* +@all -cluster"]
    with redis_server(tmp_path_factory.mktemp("firstday"), lines) as server:
        yield PasswordRedis(server.port)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("user", "password"),
    [(None, "wrong"), ("no-such-user", PASSWORD), (None, None)],
    ids=["wrong-password", "unknown-user", "no-password"],
)
async def test_refused_login_names_the_address(
    password_redis: PasswordRedis, unique_queue: str, user: str | None, password: str | None
) -> None:
    opt = RedisClientOpt(addr=password_redis.addr, username=user, password=password)
    exc, took = await serve_error(opt, unique_queue)
    assert isinstance(exc, RedisAuthError) and took < FAST, exc
    text = str(exc)
    assert text.startswith(f"Redis at redis://{password_redis.addr}/0 refused the username/password (PING)")
    assert "\n" not in text

    args = ["queue", "ls", "--redis-url", f"redis://{password_redis.addr}/0"]
    args += [*(["--username", user] if user else []), *(["--password", password] if password else [])]
    result, took = await anyio.to_thread.run_sync(lambda: invoke(*args))
    line = one_error_line(result)
    assert f"Redis at redis://{password_redis.addr}/0 refused the username/password" in line and took < FAST


@pytest.mark.anyio
async def test_right_password_works(password_redis: PasswordRedis, unique_queue: str) -> None:
    """The negative cases above fail for the password, not for the server."""
    opt = RedisClientOpt(addr=password_redis.addr, password=PASSWORD)
    async with Client(opt) as client:
        await client.enqueue(Task("fd:ok", b""), queue=unique_queue)


@pytest.mark.anyio
async def test_denied_cluster_slots_is_an_acl_error_not_cluster_mode_off(
    password_redis: PasswordRedis, unique_queue: str
) -> None:
    """redis-py words a NOPERM on CLUSTER SLOTS as "Cluster mode is not enabled": the ACL is at fault."""
    opt = RedisClusterClientOpt(addrs=[password_redis.addr], username="nocluster", password=PASSWORD)
    exc, took = await serve_error(opt, unique_queue)
    assert isinstance(exc, RedisAuthError) and took < FAST, exc
    assert "the ACL user may not do this" in str(exc) and "'cluster|slots'" in str(exc)
    assert "cluster mode" not in str(exc)


# -- item 7: the CLI ---------------------------------------------------------------------------------


def test_url_without_scheme_separator_is_named() -> None:
    wanted = (
        "not a Redis URL: 'redis-cluster//127.0.0.1:7000': "
        "expected redis://, rediss://, redis-cluster:// or redis-sentinel://"
    )
    with pytest.raises(InvalidRedisURL) as caught:
        parse_redis_url("redis-cluster//127.0.0.1:7000")
    assert str(caught.value) == wanted
    result, took = invoke("queue", "ls", "--redis-url", "redis-cluster//127.0.0.1:7000")
    assert one_error_line(result) == f"error: {wanted}" and took < FAST
    # the password never reaches the message
    with pytest.raises(InvalidRedisURL) as caught:
        parse_redis_url("redis-cluster//me:hunter2@127.0.0.1:7000")
    assert "hunter2" not in str(caught.value) and "me:***@127.0.0.1:7000" in str(caught.value)
    with pytest.raises(InvalidRedisURL, match="scheme must be one of redis://"):
        parse_redis_url("http://127.0.0.1:7000/x")


def test_redis_url_help_shows_every_scheme_and_the_credentials() -> None:
    """The help once lost "[user:pass@]" (rich read it as markup); the text now has no brackets,
    which every supported typer/rich version shows the same way."""
    result, _ = invoke("queue", "ls", "--help")
    assert result.exit_code == 0, result.output
    text = re.sub(r"[\s│]+", " ", result.output)  # rich wraps the help text into a box
    assert "redis://host:port/db, rediss://..., redis-cluster://h:p,h:p" in text
    assert "(user:pass@ before the host, if needed)" in text
    assert "\\[" not in text


@pytest.mark.anyio
async def test_admin_command_names_the_default_server_on_stderr(single_redis_url: str) -> None:
    default = "redis://127.0.0.1:6379/0"
    note = f"(no --redis-url or ASYNQ_REDIS_URL: asking {default})"
    result, _ = await anyio.to_thread.run_sync(lambda: invoke("queue", "ls", "--json"))
    assert result.stderr.splitlines()[0] == note, result.output
    if result.exit_code == 0:  # a Redis answers on 6379: stdout is nothing but the JSON
        assert isinstance(json.loads(result.stdout), list)
    else:
        assert "127.0.0.1:6379" in result.stderr.splitlines()[-1]
    # with an address given, nothing is added
    result, _ = await anyio.to_thread.run_sync(
        lambda: invoke("queue", "ls", "--json", "--redis-url", single_redis_url)
    )
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert isinstance(json.loads(result.stdout), list)


USER_MODULE = """
from pydantic import BaseModel
from asynq_aio import ServeMux

class ResizePayload(BaseModel):
    width: int

SETTING = 3
mux = ServeMux()
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh module name in an importable current directory (names are never reused: imports cache)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"fdapp_{uuid.uuid4().hex[:8]}"


def test_worker_refuses_what_is_not_a_handler(user_module: str, tmp_path: Path) -> None:
    (tmp_path / f"{user_module}.py").write_text(USER_MODULE)
    result, _ = invoke("worker", f"{user_module}:ResizePayload")
    assert one_error_line(result) == (
        f"error: {user_module}:ResizePayload is the class ResizePayload, not an App, a ServeMux or an async "
        f"handler (did you mean {user_module}:mux?)"
    )
    result, _ = invoke("worker", f"{user_module}:SETTING")
    assert one_error_line(result).startswith(f"error: {user_module}:SETTING is a int, not an App, a ServeMux")


def test_worker_reports_a_syntax_error_with_file_and_line(user_module: str, tmp_path: Path) -> None:
    (tmp_path / f"{user_module}.py").write_text("from asynq_aio import ServeMux\n\nmux = ServeMux(\n")
    result, _ = invoke("worker", f"{user_module}:mux")
    line = one_error_line(result)
    assert line.startswith(f"error: cannot import '{user_module}': syntax error at {user_module}.py:3: ")


def test_worker_reports_a_missing_import_with_file_and_line(user_module: str, tmp_path: Path) -> None:
    (tmp_path / f"{user_module}.py").write_text(
        "from asynq_aio import ServeMux\nimport pil_not_installed_xyz\n"
    )
    result, _ = invoke("worker", f"{user_module}:mux")
    assert one_error_line(result) == (
        f"error: cannot import '{user_module}': No module named 'pil_not_installed_xyz' "
        f"(at {user_module}.py:2)"
    )
    # a module that is not there at all has no file to name
    result, _ = invoke("worker", "fd_no_such_module_xyz:mux")
    assert (
        one_error_line(result)
        == "error: cannot import 'fd_no_such_module_xyz': No module named 'fd_no_such_module_xyz'"
    )


def test_worker_help_documents_log_format() -> None:
    result, _ = invoke("worker", "--help")
    assert result.exit_code == 0 and "--log-format" in result.output
    docs = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text("utf-8")
    assert "| `--log-format` | `ASYNQ_LOG_FORMAT` | `text` |" in docs


# -- item 7: a task type nobody handles --------------------------------------------------------------


@pytest.mark.anyio
async def test_unknown_task_type_warns_once_naming_the_registered_types(
    single_redis_url: str, unique_queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    mux = ServeMux()

    async def handle(task: Task) -> None:
        pass

    mux.handle_func("email:", handle)
    mux.handle_func("report:", handle)
    opt = parse_redis_url(single_redis_url)
    async with Client(opt) as client:
        infos = [
            await client.enqueue(Task("image:resize", b"%d" % i), queue=unique_queue, max_retry=0)
            for i in range(3)
        ]
    caplog.set_level(logging.INFO, logger="asynq_aio")
    server = Server(opt, Config(queues={unique_queue: 1}, concurrency=2))
    async with Inspector(opt) as insp, server.serve(mux):

        async def all_archived() -> bool:
            states = [(await insp.get_task_info(unique_queue, i.id)).state for i in infos]
            return all(s == TaskState.ARCHIVED for s in states)

        await wait_until(all_archived, 15, what="the unhandled tasks to be archived")
        last_err = (await insp.get_task_info(unique_queue, infos[0].id)).last_err
    assert last_err == "no handler registered for task type 'image:resize' (registered: 'email:', 'report:')"
    # each failed attempt is logged by the processor too (at WARNING here, as max_retry=0 archives
    # it); the mux's own warning, naming the registered types, comes once for the type
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage().startswith("no handler registered")
    ]
    assert [r.getMessage() for r in warnings] == [
        "no handler registered for task type 'image:resize' (registered: 'email:', 'report:'): "
        "its tasks fail on this worker and are retried like any failure"
    ]
