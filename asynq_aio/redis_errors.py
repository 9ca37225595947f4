"""Which redis-py errors are worth retrying, and the ones that deserve a clearer message.

The transport retries only what :func:`is_transient` accepts: the errors a cluster produces while it
heals (connection loss, failover, MOVED/ASK/TRYAGAIN during resharding, LOADING). A refused login or
an ACL denial is never retried; :func:`auth_failure` rewrites it to name the server.
"""

from __future__ import annotations

from redis import exceptions as rx

from asynq_aio.errors import RedisAuthError

_TRANSIENT_REPLY_PREFIXES = ("LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "NOREPLICAS")


def is_transient(exc: BaseException) -> bool:
    """Errors that a cluster produces while it heals; everything else is the caller's problem."""
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError):
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
        if _WRONGPASS_TEXT in text:
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
    if isinstance(exc, rx.NoPermissionError):
        return RedisAuthError(
            f"Redis at {where}: the ACL user may not do this ({what}): {exc} "
            "(the rules asynq-aio needs are in docs/security.md)"
        )
    return None


def cluster_not_ok(exc: BaseException) -> bool:
    if isinstance(exc, rx.ClusterDownError | rx.SlotNotCoveredError):
        return True
    text = str(exc)
    return "not covered" in text or text.startswith("CLUSTERDOWN")
