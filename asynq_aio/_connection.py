"""How to reach Redis: connection options for a single node, a cluster or Sentinel, URL parsing, the
retry policy, and the type of a caller's own redis-py client.

The options are pydantic models so that configuration read from the environment or a settings file is
validated where it enters, with a message that names the bad field. This is user-facing configuration;
the code that connects and retries is in ``asynq_aio.protocol``.
"""

from __future__ import annotations

import random
import re
import ssl
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from asynq_aio._errors import AsynqError


class TLSOptions(BaseModel):
    """TLS settings (``rediss://``); mirrors redis-py's ``ssl_*`` keywords."""

    model_config = ConfigDict(frozen=True)

    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    cert_reqs: Literal["required", "optional", "none"] = "required"
    check_hostname: bool = False

    def redis_kwargs(self) -> dict[str, Any]:
        """These settings as the ``ssl*`` keyword arguments of a redis-py client."""
        reqs = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
        return {
            "ssl": True,
            "ssl_ca_certs": self.ca_certs,
            "ssl_certfile": self.certfile,
            "ssl_keyfile": self.keyfile,
            "ssl_cert_reqs": reqs[self.cert_reqs],
            "ssl_check_hostname": self.check_hostname,
        }


class _CommonOpt(BaseModel):
    model_config = ConfigDict(frozen=True)

    username: str | None = None
    password: str | None = None
    tls: TLSOptions | None = None
    dial_timeout: float = Field(default=5.0, gt=0, description="seconds to open a connection")
    read_timeout: float = Field(
        default=10.0, gt=0, description="seconds to wait for a reply (blocking waits stay below it)"
    )
    pool_size: int = Field(default=128, ge=4, description="concurrent commands in flight per client")


def _split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"invalid address {addr!r}: expected host:port")
    return host.strip("[]"), int(port)


class RedisClientOpt(_CommonOpt):
    """A single Redis server."""

    addr: str = "127.0.0.1:6379"
    db: int = Field(default=0, ge=0)

    @field_validator("addr")
    @classmethod
    def _check_addr(cls, v: str) -> str:
        _split_addr(v)
        return v

    def describe(self) -> str:
        """Where this connects, for log lines and messages (``redis://host:port/db``); no credentials."""
        return f"{'rediss' if self.tls else 'redis'}://{self.addr}/{self.db}"


class RedisClusterClientOpt(_CommonOpt):
    """A Redis Cluster, reached through any of its nodes (seed addresses)."""

    addrs: list[str] = Field(min_length=1)
    # "host:port" as the cluster announces a node -> "host:port" to dial instead: for clusters
    # behind NAT, port mappings (Docker, Kubernetes) or a proxy, whose nodes announce addresses
    # this client cannot reach directly.
    address_map: dict[str, str] = Field(default_factory=dict)

    @field_validator("addrs")
    @classmethod
    def _check_addrs(cls, v: list[str]) -> list[str]:
        for a in v:
            _split_addr(a)
        return v

    @field_validator("address_map")
    @classmethod
    def _check_address_map(cls, v: dict[str, str]) -> dict[str, str]:
        for a, b in v.items():
            _split_addr(a)
            _split_addr(b)
        return v

    def describe(self) -> str:
        """Where this connects, for logs and messages (the seed addresses); no credentials."""
        return f"cluster {','.join(self.addrs)}"


class RedisSentinelOpt(_CommonOpt):
    """A Redis master found through Sentinel."""

    master_name: str
    sentinel_addrs: list[str] = Field(min_length=1)
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    db: int = Field(default=0, ge=0)

    def describe(self) -> str:
        """Where this connects, for log lines and messages (master name and sentinels); no credentials."""
        return f"sentinel {self.master_name}@{','.join(self.sentinel_addrs)}"


RedisConnOpt = RedisClientOpt | RedisClusterClientOpt | RedisSentinelOpt
"""Any of the three ways to reach Redis: what Client, Server, Inspector and Scheduler take."""

RedisClient = Redis | RedisCluster
"""A caller's own ``redis.asyncio`` client, which Client, Server, Inspector and Scheduler also take
(they borrow it and leave it open)."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter, capped by a total time budget."""

    budget: float = 30.0
    base: float = 0.01
    cap: float = 0.5

    def delay(self, attempt: int) -> float:
        """Seconds to sleep before retry ``attempt`` (from 0): uniform from 0 to ``base`` doubled per
        attempt, capped at ``cap``."""
        return random.uniform(0, min(self.cap, self.base * (2**attempt)))


class InvalidRedisURL(AsynqError, ValueError):
    """A Redis URL this library cannot use."""


def parse_redis_url(url: str) -> RedisConnOpt:
    """Parse ``redis://``, ``rediss://``, ``redis-cluster://`` (comma-separated hosts) and
    ``redis-sentinel://`` URLs into connection options.

    ``redis://[user:pass@]host:port[/db]``; ``redis-sentinel://[user:pass@]h1:p1,h2:p2/db?master=name``.
    TLS (``rediss``) takes ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` and ``ssl_cert_reqs``
    query parameters, as redis-py does.
    """
    shown = _without_password(url)
    schemes = "redis://, rediss://, redis-cluster:// or redis-sentinel://"
    if "://" not in url:
        # "redis-cluster//h:p" would otherwise parse as a path and fail on the database number
        raise InvalidRedisURL(f"not a Redis URL: {shown!r}: expected {schemes}")
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme not in _SCHEMES:
        raise InvalidRedisURL(f"invalid Redis URL {shown!r}: scheme must be one of {schemes}")
    user = unquote(parsed.username) if parsed.username else None
    password = unquote(parsed.password) if parsed.password else None
    netloc = parsed.netloc.rpartition("@")[2]
    hosts = [h for h in netloc.split(",") if h]
    hosts = [h if ":" in h.rstrip("]") else f"{h}:6379" for h in hosts]
    path = parsed.path.strip("/")
    try:
        db = int(path) if path else 0
    except ValueError as exc:
        raise InvalidRedisURL(f"invalid Redis URL {shown!r}: database {path!r} is not a number") from exc
    query = parse_qs(parsed.query)
    tls = TLSOptions() if scheme in {"rediss", "rediss-cluster", "rediss-sentinel"} else None
    if tls is not None and query.keys() & {"ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"}:
        reqs = query.get("ssl_cert_reqs", ["required"])[0]
        if reqs not in {"required", "optional", "none"}:
            raise InvalidRedisURL(
                f"invalid Redis URL {shown!r}: ssl_cert_reqs must be required|optional|none"
            )
        tls = TLSOptions(
            cert_reqs=reqs,
            ca_certs=query.get("ssl_ca_certs", [None])[0],
            certfile=query.get("ssl_certfile", [None])[0],
            keyfile=query.get("ssl_keyfile", [None])[0],
        )
    if not hosts:
        raise InvalidRedisURL(f"invalid Redis URL {shown!r}: no host")
    try:
        if scheme in {"redis", "rediss"}:
            if len(hosts) != 1:
                raise InvalidRedisURL(
                    f"invalid Redis URL {shown!r}: several hosts need redis-cluster:// or redis-sentinel://"
                )
            return RedisClientOpt(addr=hosts[0], db=db, username=user, password=password, tls=tls)
        if scheme in {"redis-cluster", "rediss-cluster"}:
            return RedisClusterClientOpt(addrs=hosts, username=user, password=password, tls=tls)
        if scheme in {"redis-sentinel", "rediss-sentinel"}:
            master = query.get("master", [None])[0]
            if not master:
                raise InvalidRedisURL(f"invalid Redis URL {shown!r}: sentinel URLs need ?master=<name>")
            return RedisSentinelOpt(
                master_name=master, sentinel_addrs=hosts, db=db, username=user, password=password, tls=tls
            )
    except ValueError as exc:
        if isinstance(exc, InvalidRedisURL):
            raise
        raise InvalidRedisURL(f"invalid Redis URL {shown!r}: {exc}") from exc
    raise AssertionError(f"unhandled scheme {scheme!r}")  # pragma: no cover: _SCHEMES lists them all


_SCHEMES = frozenset(
    {"redis", "rediss", "redis-cluster", "rediss-cluster", "redis-sentinel", "rediss-sentinel"}
)


def _without_password(url: str) -> str:
    """The URL as error messages show it: a password would end up in logs and terminals."""
    return re.sub(r"([^/:@]*):[^/@]*@", r"\1:***@", url, count=1)


def split_addr(addr: str) -> tuple[str, int]:
    """``"host:port"`` as a tuple (raises ValueError with the address in the message)."""
    return _split_addr(addr)
