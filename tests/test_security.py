"""Security: Redis ACL users and TLS, against real redis-server processes started here.

Each test starts its own servers on free ports (a single node with an ACL config, TLS nodes, a
3-master TLS cluster), never touching the shared Redis. Certificates come from ``openssl`` into a
temporary directory; without ``openssl`` the TLS tests skip and say why. The ACL rules are read
from docs/security.md, so the documented recipe is the tested one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from workerproc import wait_until

from asynq_aio import (
    Client,
    Config,
    Inspector,
    RedisClientOpt,
    RedisClusterClientOpt,
    ServeMux,
    Server,
    Task,
    TLSOptions,
    parse_redis_url,
)
from asynq_aio._connection import RedisConnOpt, RetryPolicy
from asynq_aio._devcluster import DevCluster, DevClusterTLS, find_free_port_base, find_redis_server
from asynq_aio._errors import RedisAuthError, RedisUnavailableError

pytestmark = pytest.mark.anyio

DOC = Path(__file__).resolve().parents[1] / "docs" / "security.md"
PASSWORD = "s3cret-for-tests"
ADMIN_PASSWORD = "admin-for-tests"


def documented_rules(marker: str) -> str:
    """The ACL SETUSER rules in the code block between ``<!-- marker:begin/end -->`` of the doc."""
    text = DOC.read_text()
    block = re.search(rf"<!-- {marker}:begin -->\s*```\s*(.*?)\s*```\s*<!-- {marker}:end -->", text, re.S)
    assert block is not None, f"docs/security.md has no {marker} block"
    words = block.group(1).split()
    assert words[:3] == ["ACL", "SETUSER", "asynq"], words[:3]
    return " ".join(w for w in words[3:] if not w.startswith(">"))  # the password is ours


# -- processes ------------------------------------------------------------------------------------


@dataclass
class RedisProc:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    tls: dict[str, Any]

    def admin(self, **kw: Any) -> redis.Redis:
        return redis.Redis(
            port=self.port,
            username="admin",
            password=ADMIN_PASSWORD,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 0),
            **self.tls,
            **kw,
        )


@contextmanager
def redis_server(tmp: Path, lines: list[str], tls: dict[str, Any] | None = None) -> Iterator[RedisProc]:
    """A redis-server with ``lines`` of config plus an ``admin`` user, stopped on exit."""
    port = find_free_port_base(1)
    tmp.mkdir(parents=True, exist_ok=True)
    port_lines = [f"tls-port {port}", "port 0"] if tls else [f"port {port}"]
    conf = tmp / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                *port_lines,
                "bind 127.0.0.1",
                f"dir {tmp}",
                'save ""',
                "appendonly no",
                f"user admin on >{ADMIN_PASSWORD} ~* &* +@all",
                *lines,
            ]
        )
        + "\n"
    )
    log = tmp / "redis.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([find_redis_server(), str(conf)], stdout=out, stderr=subprocess.STDOUT)
    server = RedisProc(port, proc, log, tls or {})
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with server.admin() as r:
                    if r.ping():
                        break
            except redis.RedisError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {log.read_text()[-800:]}")
            time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path  # server (and node) certificate, usable as a client certificate too
    key: Path
    other_ca: Path  # a CA that signed nothing here: a client trusting only it must fail


def make_certs(out: Path) -> Certs:
    """A throwaway CA and one certificate for 127.0.0.1/localhost, valid for a day."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot create TLS certificates (apt-get install openssl)")
    out.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=out, check=True, capture_output=True)

    new_key = ["-newkey", "rsa:2048", "-nodes"]
    for name in ("ca", "other-ca"):
        subj = f"/CN=asynq-aio {name}"
        run(
            "req",
            "-x509",
            *new_key,
            "-days",
            "1",
            "-subj",
            subj,
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.crt",
        )
    run("req", *new_key, "-subj", "/CN=127.0.0.1", "-keyout", "node.key", "-out", "node.csr")
    (out / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    ca = ["-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"]
    run("x509", "-req", "-in", "node.csr", *ca, "-days", "1", "-out", "node.crt", "-extfile", "ext.cnf")
    return Certs(
        ca=out / "ca.crt", cert=out / "node.crt", key=out / "node.key", other_ca=out / "other-ca.crt"
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def server_tls_lines(certs: Certs, *, auth_clients: bool) -> list[str]:
    return [
        f"tls-cert-file {certs.cert}",
        f"tls-key-file {certs.key}",
        f"tls-ca-cert-file {certs.ca}",
        f"tls-auth-clients {'yes' if auth_clients else 'no'}",
    ]


# -- an end-to-end round trip ---------------------------------------------------------------------


async def round_trip(opt: RedisConnOpt, queue: str) -> None:
    """Enqueue (plain, unique, scheduled), process all three with a worker, inspect the result:
    every command family asynq-aio uses, so a missing right or a TLS gap shows up here."""
    mux = ServeMux()
    ran: list[bytes] = []

    async def handler(task: Task) -> None:
        ran.append(task.payload)

    mux.handle_func("job", handler)
    config = Config(
        concurrency=2,
        queues={queue: 1},
        heartbeat_interval=0.3,
        lease_duration=5,
        recovery_interval=0.3,
        recovery_skew=0.0,
        retry_delay_func=lambda n, e, t: 0.0,  # recovered tasks run again at once
        forward_interval=0.2,
        janitor_interval=0.3,
        health_check_interval=0.3,
        shutdown_timeout=1,
    )
    with anyio.fail_after(30):
        async with Client(opt) as client, Inspector(opt) as inspector:
            await client.enqueue(Task("job", b"plain"), queue=queue)
            await client.enqueue(Task("job", b"unique"), queue=queue, unique=60)
            await client.enqueue(Task("job", b"later"), queue=queue, process_in=0.5, retention=60)
            async with Server(opt, config).serve(mux):

                async def all_ran() -> bool:
                    return len(ran) == 3

                await wait_until(all_ran, 15, what="three tasks processed")

                async def heartbeat_seen() -> bool:
                    return any(queue in s.queues for s in await inspector.servers())

                await wait_until(heartbeat_seen, 5, what="the server's heartbeat")
                await inspector.cancel_processing("no-such-task")  # PUBLISH asynq:cancel
            info = await inspector.get_queue_info(queue)
            assert (info.processed_total, info.failed_total, info.completed) == (3, 0, 1)
            (done,) = await inspector.list_completed_tasks(queue)
            await inspector.delete_task(queue, done.id)
            assert await inspector.delete_queue(queue, force=True) > 0
    assert sorted(ran) == [b"later", b"plain", b"unique"]


def denied_commands(server: RedisProc) -> list[str]:
    """ACL denials Redis logged, other than failed logins."""
    with server.admin() as r:
        entries = r.acl_log()
    return [f"{e['reason']}:{e['object']}" for e in entries if e["reason"] != "auth"]


# -- ACL ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProc]:
    rules = documented_rules("acl-rules")
    lines = [
        "user default off",
        f"user asynq on >{PASSWORD} {rules}",
        # the same rights minus scripting, and the documented rights on other keys
        f"user noscript on >{PASSWORD} {rules} -@scripting",
        f"user otherkeys on >{PASSWORD} {rules.replace('~asynq:*', '~other:*')}",
    ]
    with redis_server(tmp_path_factory.mktemp("acl"), lines) as server:
        yield server


def acl_opt(server: RedisProc, user: str, password: str = PASSWORD) -> RedisClientOpt:
    return RedisClientOpt(addr=f"127.0.0.1:{server.port}", username=user, password=password)


async def test_acl_user_with_the_documented_rules_runs_everything(
    acl_server: RedisProc, unique_queue: str
) -> None:
    await round_trip(acl_opt(acl_server, "asynq"), unique_queue)
    url = f"redis://asynq:{PASSWORD}@127.0.0.1:{acl_server.port}/0"
    await round_trip(parse_redis_url(url), unique_queue + "_url")
    assert denied_commands(acl_server) == []


async def test_wrong_password_fails_at_once_naming_the_address(
    acl_server: RedisProc, unique_queue: str
) -> None:
    opt = acl_opt(acl_server, "asynq", "wrong")
    addr = f"127.0.0.1:{acl_server.port}"
    with anyio.fail_after(10):  # a hang guard: the error is not retried for the 30 s budget
        async with Client(opt) as client:
            with pytest.raises(RedisAuthError, match=re.escape(addr)) as caught:
                await client.enqueue(Task("job"), queue=unique_queue)
        assert "username/password" in str(caught.value)
        with pytest.raises(RedisAuthError, match=re.escape(addr)):
            await Server(opt, Config(queues={unique_queue: 1})).run(ServeMux())
        async with Client(acl_opt(acl_server, "nobody")) as client:
            with pytest.raises(RedisAuthError, match=re.escape(addr)):
                await client.enqueue(Task("job"), queue=unique_queue)


async def test_a_user_without_a_needed_right_gets_an_error_naming_what_was_denied(
    acl_server: RedisProc, unique_queue: str
) -> None:
    addr = f"127.0.0.1:{acl_server.port}"
    with anyio.fail_after(10):
        async with Client(acl_opt(acl_server, "noscript")) as client:
            with pytest.raises(RedisAuthError, match=re.escape(addr)) as caught:
                await client.enqueue(Task("job"), queue=unique_queue)
        assert "NOPERM" in str(caught.value) or "no permissions" in str(caught.value)
        assert "docs/security.md" in str(caught.value)
        async with Client(acl_opt(acl_server, "otherkeys")) as client:
            with pytest.raises(RedisAuthError, match="key"):
                await client.enqueue(Task("job"), queue=unique_queue)


# -- TLS, single node -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProc]:
    tls = {"ssl": True, "ssl_ca_certs": str(certs.ca)}
    lines = ["user default on nopass ~* &* +@all", *server_tls_lines(certs, auth_clients=False)]
    with redis_server(tmp_path_factory.mktemp("tls"), lines, tls=tls) as server:
        yield server


async def test_tls_by_url_and_by_options(tls_server: RedisProc, certs: Certs, unique_queue: str) -> None:
    url = f"rediss://127.0.0.1:{tls_server.port}/0?ssl_ca_certs={certs.ca}"
    opt = parse_redis_url(url)
    assert isinstance(opt, RedisClientOpt) and opt.tls is not None and opt.tls.ca_certs == str(certs.ca)
    await round_trip(opt, unique_queue)
    by_options = RedisClientOpt(addr=f"127.0.0.1:{tls_server.port}", tls=TLSOptions(ca_certs=str(certs.ca)))
    await round_trip(by_options, unique_queue + "_opt")
    named = TLSOptions(ca_certs=str(certs.ca), check_hostname=True)  # the cert names 127.0.0.1
    await round_trip(RedisClientOpt(addr=f"127.0.0.1:{tls_server.port}", tls=named), unique_queue + "_h")


async def test_tls_refuses_a_server_the_ca_did_not_sign_and_plain_tcp(
    tls_server: RedisProc, certs: Certs, unique_queue: str
) -> None:
    addr = f"127.0.0.1:{tls_server.port}"
    short = RetryPolicy(budget=0.5)
    untrusted = RedisClientOpt(addr=addr, tls=TLSOptions(ca_certs=str(certs.other_ca)))
    with anyio.fail_after(10):
        async with Client(untrusted, retry=short) as client:
            with pytest.raises(RedisUnavailableError, match=re.escape(addr)) as caught:
                await client.enqueue(Task("job"), queue=unique_queue)
        assert "certificate verify failed" in str(caught.value)
        async with Client(RedisClientOpt(addr=addr), retry=short) as client:  # no TLS at all
            with pytest.raises(RedisUnavailableError, match=re.escape(addr)):
                await client.enqueue(Task("job"), queue=unique_queue)


async def test_mutual_tls_needs_the_client_certificate(
    certs: Certs, tmp_path: Path, unique_queue: str
) -> None:
    tls = {
        "ssl": True,
        "ssl_ca_certs": str(certs.ca),
        "ssl_certfile": str(certs.cert),
        "ssl_keyfile": str(certs.key),
    }
    lines = ["user default on nopass ~* &* +@all", *server_tls_lines(certs, auth_clients=True)]
    with redis_server(tmp_path / "mtls", lines, tls=tls) as server:
        addr = f"127.0.0.1:{server.port}"
        with_cert = TLSOptions(ca_certs=str(certs.ca), certfile=str(certs.cert), keyfile=str(certs.key))
        await round_trip(RedisClientOpt(addr=addr, tls=with_cert), unique_queue)
        url = f"rediss://{addr}/0?ssl_ca_certs={certs.ca}&ssl_certfile={certs.cert}&ssl_keyfile={certs.key}"
        await round_trip(parse_redis_url(url), unique_queue + "_url")
        without = RedisClientOpt(addr=addr, tls=TLSOptions(ca_certs=str(certs.ca)))
        with anyio.fail_after(10):
            async with Client(without, retry=RetryPolicy(budget=0.5)) as client:
                with pytest.raises(RedisUnavailableError, match=re.escape(addr)):
                    await client.enqueue(Task("job"), queue=unique_queue)


# -- TLS cluster, with the ACL user ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_cluster(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """3 masters speaking only TLS (clients and cluster bus), with the documented ACL user."""
    base = find_free_port_base(3)
    tls = DevClusterTLS(cert_file=certs.cert, key_file=certs.key, ca_file=certs.ca)
    cluster = DevCluster(
        tmp_path_factory.mktemp("tls-cluster"),
        ports=range(base, base + 3),
        replicas=0,
        appendonly=False,
        tls=tls,
    )
    rules = documented_rules("acl-rules").split() + documented_rules("acl-cluster-rules").split()
    try:
        cluster.start()
        for port in cluster.ports:
            with redis.Redis(port=port, retry=Retry(NoBackoff(), 0), **tls.redis_kwargs()) as r:
                r.execute_command("ACL", "SETUSER", "asynq", f">{PASSWORD}", *rules)
        yield cluster
    finally:
        cluster.stop(remove_data=True)


@pytest.mark.slow
async def test_tls_cluster_with_the_acl_user(
    tls_cluster: DevCluster, certs: Certs, unique_queue: str
) -> None:
    tls = TLSOptions(ca_certs=str(certs.ca))
    opt = RedisClusterClientOpt(addrs=tls_cluster.addrs, username="asynq", password=PASSWORD, tls=tls)
    await round_trip(opt, unique_queue)
    async with Inspector(opt) as inspector:
        (loc,) = await inspector.cluster_locations([unique_queue])
        assert loc.nodes and loc.nodes[0].addr in tls_cluster.addrs
    url = f"rediss-cluster://asynq:{PASSWORD}@{','.join(tls_cluster.addrs)}/?ssl_ca_certs={certs.ca}"
    await round_trip(parse_redis_url(url), unique_queue + "_url")
    for port in tls_cluster.ports:
        with redis.Redis(port=port, **tls_cluster.tls.redis_kwargs()) as r:  # type: ignore[union-attr]
            denied = [e for e in r.acl_log() if e["reason"] != "auth"]
        assert denied == [], denied


@pytest.mark.slow
async def test_tls_cluster_wrong_password_fails_at_once_naming_the_cluster(
    tls_cluster: DevCluster, certs: Certs
) -> None:
    tls = TLSOptions(ca_certs=str(certs.ca))
    opt = RedisClusterClientOpt(addrs=tls_cluster.addrs, username="asynq", password="wrong", tls=tls)
    with anyio.fail_after(10):  # a hang guard: not retried for the default 30 s budget
        async with Client(opt) as client:
            with pytest.raises(RedisAuthError) as caught:
                await client.enqueue(Task("job"), queue="anything")
    assert tls_cluster.addrs[0] in str(caught.value)
    assert "refused the username/password" in str(caught.value)
