"""Which redis-py errors are worth retrying, and the ones that deserve a clearer message.

The transport (transport.py) retries only what :func:`is_transient` accepts: the errors a cluster
produces while it heals (connection loss, failover, MOVED/ASK/TRYAGAIN during resharding, LOADING).
A refused login or an ACL denial is never retried; :func:`auth_failure` rewrites it to name the
server. Nor is a client of the wrong kind for its server (:func:`config_mistake`): a single-node
client gets MOVED from a cluster node for every key outside that node's slots, and a cluster client
cannot load a slot map from a standalone Redis, forever. Kept apart from the transport because the
classification is pure (tests check it without a server) and the retry loop is not.
"""

from __future__ import annotations

from typing import TypeVar

from redis import exceptions as rx

from asynq_aio._errors import RedisAuthError, RedisConfigError

_TRANSIENT_REPLY_PREFIXES = ("LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "NOREPLICAS")


def is_transient(exc: BaseException, *, cluster: bool = True) -> bool:
    """Errors that a cluster produces while it heals; everything else is the caller's problem.

    ``cluster`` says whether the client is a cluster client: only one of those can follow a MOVED
    reply, so on any other client MOVED means "wrong kind of client", not "resharding"."""
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
        return False
    if isinstance(exc, rx.MovedError) and not cluster:
        return False
    if isinstance(
        exc,
        rx.ConnectionError
        | rx.TimeoutError
        | rx.ClusterError
        | rx.ClusterDownError
        | rx.TryAgainError
        | rx.AskError
        | rx.ReadOnlyError
        | rx.SlotNotCoveredError
        | OSError
        | TimeoutError,
    ):
        return True
    if isinstance(exc, rx.ResponseError):
        return str(exc).startswith(_TRANSIENT_REPLY_PREFIXES)
    if isinstance(exc, rx.RedisClusterException):
        # "Redis Cluster cannot be connected", raised while (re)initialising the slot map; when
        # every node refused the login, waiting will not help
        text = str(exc)
        if _WRONGPASS_TEXT in text or _cluster_mode_off(exc) or _chained(exc, rx.NoPermissionError):
            return False
        return "cannot be connected" in text or "No targets" in text or "not covered" in text
    # redis-py 8.1 race: another coroutine's internal aclose() nulls a connection's writer mid-handshake
    return isinstance(exc, AttributeError) and "NoneType" in str(exc)


_WRONGPASS_TEXT = "invalid username-password pair"  # Redis' WRONGPASS reply


def auth_failure(exc: Exception, where: str, what: str) -> RedisAuthError | None:
    """A refused login or an ACL denial as an error that names the server (redis-py's does not)."""
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError) or (
        isinstance(exc, rx.RedisClusterException) and _WRONGPASS_TEXT in str(exc)
    ):
        return RedisAuthError(f"Redis at {where} refused the username/password ({what}): {exc}")
    # redis-py reports a denied CLUSTER SLOTS as "Cluster mode is not enabled on this node",
    # keeping the NOPERM reply only in the exception chain
    denied: rx.NoPermissionError | None = None
    if isinstance(exc, rx.NoPermissionError):
        denied = exc
    elif isinstance(exc, rx.RedisClusterException):
        denied = _chained(exc, rx.NoPermissionError)
    if denied is not None:
        return RedisAuthError(
            f"Redis at {where}: the ACL user may not do this ({what}): {denied} "
            "(the rules asynq-aio needs are in docs/security.md)"
        )
    return None


def config_mistake(exc: BaseException, *, cluster: bool, addr: str) -> RedisConfigError | None:
    """The error of a client of the wrong kind for its server, naming ``addr`` and the right option;
    None for any other error."""
    if not cluster and isinstance(exc, rx.MovedError):
        return cluster_node_error(addr)
    if cluster and _cluster_mode_off(exc):
        # redis-py keeps the last seed's error, and only when no seed answered as a cluster node
        what = (
            f"{addr} is not a Redis Cluster node (cluster mode is off)"
            if "," not in addr
            else f"none of the seed nodes {addr} answered as a Redis Cluster node (cluster mode is off)"
        )
        return RedisConfigError(f"{what}: use redis://host:port or RedisClientOpt")
    return None


def cluster_node_error(addr: str) -> RedisConfigError:
    """A single-node client pointed at a node of a multi-master cluster, however it was found out
    (a MOVED reply, or the start-up check)."""
    return RedisConfigError(
        f"{addr} is a Redis Cluster node: use redis-cluster://host:port,... or RedisClusterClientOpt"
    )


def _cluster_mode_off(exc: BaseException) -> bool:
    """A cluster client's slot-map load refused because the node runs without cluster support.

    redis-py raises the same text for any error reply to CLUSTER SLOTS, so the reply itself (kept
    in the exception chain) decides: a NOPERM is an ACL problem, a CLUSTERDOWN and the like heal."""
    if not isinstance(exc, rx.RedisClusterException) or "Cluster mode is not enabled" not in str(exc):
        return False
    reply = _chained(exc, rx.ResponseError)
    if reply is None:
        return True  # a redis-py that no longer chains the reply: trust its wording
    return not isinstance(reply, rx.NoPermissionError) and not is_transient(reply)


_E = TypeVar("_E", bound=BaseException)


def _chained(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first exception of ``kind`` in ``exc``'s cause/context chain (``exc`` itself excluded)."""
    seen = {id(exc)}
    link = exc.__cause__ or exc.__context__
    while link is not None and id(link) not in seen:
        if isinstance(link, kind):
            return link
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return None


def cluster_not_ok(exc: BaseException) -> bool:
    """Whether ``exc`` says the cluster cannot serve (CLUSTERDOWN, or a slot not covered): what makes a retry
    loop that ran out report ClusterNotReadyError rather than RedisUnavailableError."""
    if isinstance(exc, rx.ClusterDownError | rx.SlotNotCoveredError):
        return True
    text = str(exc)
    return "not covered" in text or text.startswith("CLUSTERDOWN")
