"""Start and stop a local Redis Cluster from plain ``redis-server`` binaries.

Used by the test fixtures and by ``asynq-aio dev cluster``. Only ``redis-server`` (or
``valkey-server``) is needed: the cluster is formed over redis-py with CLUSTER ADDSLOTSRANGE,
MEET and REPLICATE rather than ``redis-cli --cluster create``, so a machine with just the server
package works. Everything a later process needs to find the nodes again (ports, pids) lives under
``base_dir``, so ``stop()`` and ``status()`` work from a fresh process, e.g. ``dev cluster down``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from asynq_aio._errors import AsynqError

__all__ = [
    "CLUSTER_SLOTS",
    "DEFAULT_PORTS",
    "DevCluster",
    "DevClusterError",
    "DevClusterTLS",
    "NodeStatus",
    "RedisServerNotFound",
    "find_free_port_base",
    "find_redis_server",
]

CLUSTER_SLOTS = 16384
DEFAULT_PORTS: tuple[int, ...] = tuple(range(7000, 7006))
_BUS_PORT_OFFSET = 10000  # Redis derives each node's cluster bus port as port + 10000
_STATE_FILE = "cluster.json"
_PID_FILE = "redis.pid"
_POLL = 0.05

# Popen objects of nodes this process started, by pid. The nodes must outlive the DevCluster that
# started them (``dev cluster up`` exits and leaves them running), and a garbage-collected Popen of
# a live child warns ResourceWarning, which the test suite turns into an error. Keeping them here
# also lets this process reap its own children on stop instead of leaving zombies.
_children: dict[int, subprocess.Popen[bytes]] = {}


class RedisServerNotFound(AsynqError):
    """Neither ``redis-server`` nor ``valkey-server`` is on PATH."""


class DevClusterError(AsynqError):
    """A node would not start, or the cluster did not become healthy in time."""


def find_redis_server() -> str:
    """Return the path of ``redis-server`` (or ``valkey-server``) on PATH."""
    for name in ("redis-server", "valkey-server"):
        path = shutil.which(name)
        if path:
            return path
    raise RedisServerNotFound(
        "redis-server not found on PATH: install Redis >= 7 "
        "(Debian/Ubuntu: `apt-get install redis-server`, macOS: `brew install redis`) or Valkey"
    )


def _bindable(host: str, port: int) -> bool:
    """True if nothing listens on ``host:port``; SO_REUSEADDR as redis-server uses, so TIME_WAIT is fine."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def find_free_port_base(count: int = 6, host: str = "127.0.0.1", low: int = 20000, high: int = 22000) -> int:
    """Return a port ``p`` such that ``p .. p+count-1`` and their bus ports are free on ``host``.

    The default range keeps the bus ports (``+10000``) below Linux's ephemeral range, so an
    outgoing connection cannot grab one; the random start keeps parallel test sessions apart.
    """
    candidates = list(range(low, high - count))
    random.shuffle(candidates)
    for base in candidates[:500]:
        ports = range(base, base + count)
        if all(_bindable(host, p) and _bindable(host, p + _BUS_PORT_OFFSET) for p in ports):
            return base
    raise DevClusterError(f"no {count} consecutive free ports (with bus ports) in {low}-{high}")


@dataclass(frozen=True)
class NodeStatus:
    """One node as seen by ``DevCluster.status()``; fields are None when the node is unreachable."""

    port: int
    pid: int | None
    alive: bool
    role: str | None = None  # "master" or "replica"
    node_id: str | None = None
    master_id: str | None = None
    slots: tuple[tuple[int, int], ...] = ()
    cluster_state: str | None = None


@dataclass(frozen=True)
class _NodeLine:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...] = field(default=())

    @property
    def is_master(self) -> bool:
        return "master" in self.flags


def _parse_nodes(text: str) -> list[_NodeLine]:
    nodes = []
    for line in text.strip().splitlines():
        parts = line.split()
        _, _, port = parts[1].split("@", 1)[0].rpartition(":")
        slots: list[tuple[int, int]] = []
        for item in parts[8:]:
            if item.startswith("["):  # a migrating/importing slot, not an owned one
                continue
            start, _, end = item.partition("-")
            slots.append((int(start), int(end or start)))
        nodes.append(
            _NodeLine(
                node_id=parts[0],
                port=int(port or 0),
                flags=frozenset(parts[2].split(",")),
                master_id=None if parts[3] == "-" else parts[3],
                slots=tuple(slots),
            )
        )
    return nodes


def _cmd(client: redis.Redis, *args: str | int) -> Any:
    """One raw command; CLUSTER subcommands go as two words so redis-py leaves the reply unparsed."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _info_field(text: str, key: str) -> str | None:
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return value.strip()
    return None


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live (non-zombie) process; reaps it if it is our exited child."""
    proc = _children.get(pid)
    if proc is not None:
        if proc.poll() is None:
            return True
        del _children[pid]
        return False
    with suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():  # Linux: a zombie is not a running server, and a reused pid is not ours
        with suppress(OSError):
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            return b"redis" in cmdline or b"valkey" in cmdline
    return True


@dataclass(frozen=True)
class DevClusterTLS:
    """Certificates for a TLS-only cluster: clients and the cluster bus both speak TLS.

    Each node listens with TLS on its port (plain TCP is off), ``tls-cluster`` and
    ``tls-replication`` encrypt node-to-node traffic, and every node presents ``cert_file``.
    With ``auth_clients`` a client must also present a certificate signed by ``ca_file``.
    """

    cert_file: Path
    key_file: Path
    ca_file: Path
    auth_clients: bool = False

    def config_lines(self) -> list[str]:
        """The ``redis.conf`` lines that turn on TLS for the cluster bus and replication and name the
        certificates (absolute paths); each node's ``tls-port`` is written apart from them."""
        return [
            "tls-cluster yes",
            "tls-replication yes",
            f"tls-cert-file {Path(self.cert_file).absolute()}",
            f"tls-key-file {Path(self.key_file).absolute()}",
            f"tls-ca-cert-file {Path(self.ca_file).absolute()}",
            f"tls-auth-clients {'yes' if self.auth_clients else 'no'}",
        ]

    def redis_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for a redis-py client of this cluster (the CA is checked, not names)."""
        kw: dict[str, Any] = {"ssl": True, "ssl_ca_certs": str(self.ca_file), "ssl_cert_reqs": "required"}
        if self.auth_clients:  # the node certificate doubles as the client certificate
            kw.update(ssl_certfile=str(self.cert_file), ssl_keyfile=str(self.key_file))
        return kw

    def to_json(self) -> dict[str, Any]:
        """These settings as JSON values, for the state file :meth:`DevCluster.from_dir` reads back."""
        return {
            "cert_file": str(self.cert_file),
            "key_file": str(self.key_file),
            "ca_file": str(self.ca_file),
            "auth_clients": self.auth_clients,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DevClusterTLS:
        """The inverse of :meth:`to_json`; ``auth_clients`` defaults to False when absent."""
        return cls(
            cert_file=Path(data["cert_file"]),
            key_file=Path(data["key_file"]),
            ca_file=Path(data["ca_file"]),
            auth_clients=bool(data.get("auth_clients", False)),
        )


class DevCluster:
    """A Redis Cluster of local ``redis-server`` processes, one directory per node under ``base_dir``.

    The first ``len(ports) // (replicas + 1)`` ports become masters with the slots split evenly;
    the rest replicate them round-robin. Health checks accept any master/replica layout with full
    slot coverage, so the cluster stays "healthy" after a failover swapped roles.
    """

    def __init__(
        self,
        base_dir: Path,
        ports: Sequence[int] = DEFAULT_PORTS,
        replicas: int = 1,
        appendonly: bool = True,
        host: str = "127.0.0.1",
        node_timeout_ms: int = 2000,
        redis_server: str | None = None,
        tls: DevClusterTLS | None = None,
    ) -> None:
        if replicas < 0 or not ports or len(ports) % (replicas + 1):
            raise ValueError(f"{len(ports)} ports cannot form masters with {replicas} replicas each")
        self.base_dir = Path(base_dir).absolute()
        self.ports = tuple(ports)
        self.replicas = replicas
        self.appendonly = appendonly
        self.host = host
        self.node_timeout_ms = node_timeout_ms
        self._redis_server = redis_server
        self.tls = tls

    @classmethod
    def from_dir(cls, base_dir: Path) -> DevCluster:
        """Rebuild the DevCluster that ``start()`` recorded in ``base_dir`` (for ``down``/``status``)."""
        state_path = Path(base_dir) / _STATE_FILE
        try:
            state = json.loads(state_path.read_text())
        except FileNotFoundError:
            raise DevClusterError(f"no dev cluster in {base_dir} (missing {_STATE_FILE})") from None
        return cls(
            base_dir,
            ports=state["ports"],
            replicas=state["replicas"],
            appendonly=state["appendonly"],
            host=state["host"],
            node_timeout_ms=state["node_timeout_ms"],
            tls=DevClusterTLS.from_json(state["tls"]) if state.get("tls") else None,
        )

    @property
    def n_masters(self) -> int:
        """How many of the ports are masters: the rest are their replicas."""
        return len(self.ports) // (self.replicas + 1)

    @property
    def addrs(self) -> list[str]:
        """Every node's ``host:port``, masters and replicas, in port order."""
        return [f"{self.host}:{port}" for port in self.ports]

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Launch missing nodes, form the cluster if it is new, and wait until it is healthy.

        Idempotent: running nodes are left alone, so a second call on a healthy cluster returns
        after one health check. Nodes restarted from existing ``nodes.conf`` rejoin by themselves.
        """
        self._redis_server = self._redis_server or find_redis_server()  # fail before touching disk
        self._write_state()
        for port in self.ports:
            if self._pid(port) is None:
                self._launch(port)
        deadline = time.monotonic() + timeout
        for port in self.ports:
            self._wait_ping(port, deadline)
        if all(self._is_fresh(port) for port in self.ports):
            self._form(deadline)
        try:
            self.wait_healthy(max(deadline - time.monotonic(), 1.0))
        except DevClusterError as exc:
            raise DevClusterError(
                f"{exc} (logs in {self.base_dir}/<port>/redis.log; to start over, stop with remove_data)"
            ) from None

    def stop(self, remove_data: bool = False, timeout: float = 10.0) -> None:
        """SIGTERM every node, SIGKILL those still alive after ``timeout``; optionally delete data."""
        self._terminate(self.ports, timeout)
        if remove_data:
            for port in self.ports:
                shutil.rmtree(self._node_dir(port), ignore_errors=True)
            (self.base_dir / _STATE_FILE).unlink(missing_ok=True)
            with suppress(OSError):
                self.base_dir.rmdir()  # only if nothing else lives there

    def is_running(self) -> bool:
        """True when every node's process is alive (says nothing about cluster health)."""
        return all(self._pid(port) is not None for port in self.ports)

    def kill_node(self, port: int, sig: int = signal.SIGKILL, *, wait: bool = True) -> None:
        """Send ``sig`` to one node (chaos tests); with ``wait``, return once the process is gone.

        Pass ``wait=False`` for signals that do not end the process, such as SIGSTOP.
        """
        pid = self._pid(port)
        if pid is None:
            raise DevClusterError(f"node {port} is not running")
        os.kill(pid, sig)
        if wait:
            self._wait_exit([pid], 10.0, kill_after=False)
            (self._node_dir(port) / _PID_FILE).unlink(missing_ok=True)

    def restart_node(self, port: int, timeout: float = 10.0) -> None:
        """Stop the node if it runs, start it again with the same config and wait for PING.

        Does not wait for the cluster to heal; call ``wait_healthy()`` when the test needs that.
        """
        self._terminate([port], timeout)
        self._launch(port)
        self._wait_ping(port, time.monotonic() + timeout)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every node says cluster_state:ok and every master has its replicas attached."""
        deadline = time.monotonic() + timeout
        while True:
            problem = self._health_problem()
            if problem is None:
                return
            if time.monotonic() > deadline:
                raise DevClusterError(f"cluster not healthy after {timeout:.0f}s: {problem}")
            time.sleep(_POLL * 2)

    def status(self) -> list[NodeStatus]:
        """One NodeStatus per port, from each node's own CLUSTER NODES and CLUSTER INFO."""
        result = []
        for port in self.ports:
            pid = self._pid(port)
            if pid is None:
                result.append(NodeStatus(port=port, pid=None, alive=False))
                continue
            try:
                with self._client(port) as r:
                    me = next(n for n in _parse_nodes(_cmd(r, "CLUSTER", "NODES")) if "myself" in n.flags)
                    state = _info_field(_cmd(r, "CLUSTER", "INFO"), "cluster_state")
            except (redis.RedisError, StopIteration):
                result.append(NodeStatus(port=port, pid=pid, alive=True))
                continue
            result.append(
                NodeStatus(
                    port=port,
                    pid=pid,
                    alive=True,
                    role="master" if me.is_master else "replica",
                    node_id=me.node_id,
                    master_id=me.master_id,
                    slots=me.slots,
                    cluster_state=state,
                )
            )
        return result

    # -- processes ---------------------------------------------------------------------------

    def _node_dir(self, port: int) -> Path:
        return self.base_dir / str(port)

    def _pid(self, port: int) -> int | None:
        """The node's pid if its process is alive, from the pid file (works across processes)."""
        try:
            pid = int((self._node_dir(port) / _PID_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def _write_state(self) -> None:
        state = {
            "ports": list(self.ports),
            "replicas": self.replicas,
            "appendonly": self.appendonly,
            "host": self.host,
            "node_timeout_ms": self.node_timeout_ms,
            "tls": self.tls.to_json() if self.tls else None,
        }
        path = self.base_dir / _STATE_FILE
        if path.exists():
            old = json.loads(path.read_text())
            if (old["ports"], old["host"], old["replicas"]) != (state["ports"], state["host"], self.replicas):
                raise DevClusterError(
                    f"{self.base_dir} holds a cluster on ports {old['ports']}; "
                    "stop it with remove_data (`dev cluster down --purge`) or use another directory"
                )
        self.base_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state, indent=2) + "\n")

    def _write_config(self, port: int) -> Path:
        node_dir = self._node_dir(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        # With TLS the node's port is its TLS port and plain TCP is off (port 0).
        lines = [
            *([f"tls-port {port}", "port 0"] if self.tls else [f"port {port}"]),
            f"bind {self.host}",
            f"dir {node_dir}",
            "daemonize no",
            'logfile ""',
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            f"cluster-node-timeout {self.node_timeout_ms}",
            # Let a replica take over however long it was cut off: chaos tests kill masters on purpose.
            "cluster-replica-validity-factor 0",
            f"appendonly {'yes' if self.appendonly else 'no'}",
            # No RDB snapshots: AOF (when on) is the persistence, and tests should not pay for BGSAVE.
            'save ""',
            # Replicas sync at once instead of waiting 5 s for more replicas to share a diskless sync.
            "repl-diskless-sync-delay 0",
            *(self.tls.config_lines() if self.tls else []),
        ]
        conf = node_dir / "redis.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _launch(self, port: int) -> None:
        binary = self._redis_server = self._redis_server or find_redis_server()
        conf = self._write_config(port)
        if not _bindable(self.host, port):
            raise DevClusterError(f"port {self.host}:{port} is already in use by another process")
        with open(self._node_dir(port) / "redis.log", "ab") as log:
            # A new session keeps the nodes alive when the terminal that ran `dev cluster up` closes.
            proc = subprocess.Popen(
                [binary, str(conf)],
                cwd=self._node_dir(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _children[proc.pid] = proc
        (self._node_dir(port) / _PID_FILE).write_text(f"{proc.pid}\n")

    def _wait_ping(self, port: int, deadline: float) -> None:
        while True:
            if self._pid(port) is None:
                raise DevClusterError(f"redis-server on port {port} exited: {self._log_tail(port)}")
            with suppress(redis.RedisError), self._client(port) as r:
                if r.ping():
                    return
            if time.monotonic() > deadline:
                raise DevClusterError(f"redis-server on port {port} did not answer PING in time")
            time.sleep(_POLL)

    def _terminate(self, ports: Sequence[int], timeout: float) -> None:
        """SIGTERM (plus SIGCONT, so a node paused by a chaos test sees it), SIGKILL after ``timeout``."""
        pids = [pid for port in ports if (pid := self._pid(port)) is not None]
        for pid in pids:
            for sig in (signal.SIGTERM, signal.SIGCONT):
                with suppress(ProcessLookupError):
                    os.kill(pid, sig)
        self._wait_exit(pids, timeout, kill_after=True)
        for port in ports:
            (self._node_dir(port) / _PID_FILE).unlink(missing_ok=True)

    def _wait_exit(self, pids: list[int], timeout: float, *, kill_after: bool) -> None:
        deadline = time.monotonic() + timeout
        while pids:
            pids = [pid for pid in pids if _pid_alive(pid)]
            if not pids:
                return
            if time.monotonic() > deadline:
                if not kill_after:
                    raise DevClusterError(f"processes {pids} still alive after {timeout:.0f}s")
                for pid in pids:
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                kill_after, deadline = False, time.monotonic() + 5.0
            time.sleep(_POLL)

    def _log_tail(self, port: int, lines: int = 3) -> str:
        try:
            text = (self._node_dir(port) / "redis.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    # -- cluster formation and health ----------------------------------------------------------

    @contextmanager
    def _client(self, port: int) -> Iterator[redis.Redis]:
        # No retries: the callers poll on their own, and redis-py's default backoff turns one
        # refused connection to a starting or killed node into seconds of waiting.
        client = redis.Redis(
            host=self.host,
            port=port,
            decode_responses=True,
            socket_timeout=2.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 0),
            **(self.tls.redis_kwargs() if self.tls else {}),
        )
        try:
            yield client
        finally:
            client.close()

    def _nodes(self, port: int) -> list[_NodeLine]:
        with self._client(port) as r:
            return _parse_nodes(_cmd(r, "CLUSTER", "NODES"))

    def _is_fresh(self, port: int) -> bool:
        """A node that knows only itself and owns no slots: nothing formed yet."""
        with self._client(port) as r:
            info = _cmd(r, "CLUSTER", "INFO")
        return (
            _info_field(info, "cluster_known_nodes") == "1"
            and _info_field(info, "cluster_slots_assigned") == "0"
        )

    def _form(self, deadline: float) -> None:
        masters, replicas = self.ports[: self.n_masters], self.ports[self.n_masters :]
        ids = {}
        for epoch, port in enumerate(self.ports, start=1):
            with self._client(port) as r:
                ids[port] = _cmd(r, "CLUSTER", "MYID")
                # Distinct epochs up front spare the nodes a round of epoch-collision resolution.
                _cmd(r, "CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for i, port in enumerate(masters):
            start = i * CLUSTER_SLOTS // self.n_masters
            end = (i + 1) * CLUSTER_SLOTS // self.n_masters - 1
            with self._client(port) as r:
                try:
                    _cmd(r, "CLUSTER", "ADDSLOTSRANGE", start, end)
                except redis.ResponseError:  # Redis 6 has no ADDSLOTSRANGE
                    _cmd(r, "CLUSTER", "ADDSLOTS", *range(start, end + 1))
        with self._client(self.ports[0]) as r:
            for port in self.ports[1:]:
                _cmd(r, "CLUSTER", "MEET", self.host, port)
        # REPLICATE needs the replica to know its master, so wait for the gossip to spread first.
        self._wait_for("nodes to meet", deadline, self._meet_problem)
        for i, port in enumerate(replicas):
            with self._client(port) as r:
                _cmd(r, "CLUSTER", "REPLICATE", ids[masters[i % self.n_masters]])

    def _wait_for(self, what: str, deadline: float, check: Callable[[], str | None]) -> None:
        while (problem := check()) is not None:
            if time.monotonic() > deadline:
                raise DevClusterError(f"timed out waiting for {what}: {problem}")
            time.sleep(_POLL)

    def _meet_problem(self) -> str | None:
        for port in self.ports:
            known = [n for n in self._nodes(port) if not n.flags & {"handshake", "noaddr"}]
            if len(known) < len(self.ports):
                return f"node {port} knows {len(known)}/{len(self.ports)} nodes"
        return None

    def _health_problem(self) -> str | None:
        """None if healthy, else the first thing that is wrong (for the timeout message)."""
        for port in self.ports:
            if self._pid(port) is None:
                return f"node {port} is not running"
            try:
                with self._client(port) as r:
                    info = _cmd(r, "CLUSTER", "INFO")
                    nodes = _parse_nodes(_cmd(r, "CLUSTER", "NODES"))
                    repl = r.info("replication")
            except redis.RedisError as exc:
                return f"node {port}: {exc}"
            if (state := _info_field(info, "cluster_state")) != "ok":
                return f"node {port} reports cluster_state:{state}"
            if (bad := [n.port for n in nodes if n.flags & {"fail", "fail?", "handshake", "noaddr"}]) != []:
                return f"node {port} sees nodes {bad} as failing or unknown"
            masters = [n for n in nodes if n.is_master and n.slots]
            if len(masters) != self.n_masters:
                return f"node {port} sees {len(masters)}/{self.n_masters} masters with slots"
            if sum(end - start + 1 for m in masters for start, end in m.slots) != CLUSTER_SLOTS:
                return f"node {port} does not see all {CLUSTER_SLOTS} slots covered"
            for m in masters:
                attached = [n for n in nodes if n.master_id == m.node_id]
                if len(attached) != self.replicas:
                    return f"node {port} sees {len(attached)}/{self.replicas} replicas of master {m.port}"
            if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                return f"replica {port} has no link to its master yet"
        return None
