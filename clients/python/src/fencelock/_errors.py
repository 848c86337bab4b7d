"""The errors of the client, one per kind of answer a caller acts on differently.

Every error the server answers carries its sentence (``str(err)``) and its machine
code (``err.code``); the client maps the code to a class, so that a caller can tell
a lock held by someone else from a lock it lost, and both from a server that cannot
be reached.
"""

from __future__ import annotations

from typing import Any


class FencelockError(Exception):
    """Any failure of a fencelock call; ``code`` is the server's error code."""

    code: str

    def __init__(self, message: str, code: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class LockHeld(FencelockError):
    """Someone else holds the lock (or every slot of the semaphore) and the wait ran out.

    ``fence`` and ``expire_time`` describe the holder where the server said them;
    ``retry_after`` is the server's ``Retry-After`` in seconds.
    """

    def __init__(
        self,
        message: str,
        code: str = "lock_held",
        status: int | None = 409,
        *,
        fence: int | None = None,
        expire_time: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code, status)
        self.fence = fence
        self.expire_time = expire_time
        self.retry_after = retry_after


class LockLost(FencelockError):
    """The holding is over: the server said the fence no longer holds, or no heartbeat
    was confirmed before the lease would end. Work done since may not have been
    exclusive."""


class LockDisabled(FencelockError):
    """An operator disabled the lock's name (409 ``lock_disabled``): no acquire
    succeeds until it is enabled again, so waiting does not help."""


class ReleaseRequested(FencelockError):
    """An operator asked the holder to release (``fencelock ask-release``), seen on a
    heartbeat's answer: raised by ``lease.check()``, so that the ``with`` block ends
    and releases the lock. The lock is still held when it is raised."""


class NotHolder(FencelockError):
    """The nonce sent is not the holder's (403 ``not_holder``)."""


class Unauthorized(FencelockError):
    """The server lists tokens and the client sent none of them (401)."""


class Forbidden(FencelockError):
    """The token may not use this namespace, or may not list (403)."""


class RateLimited(FencelockError):
    """The token is over its request rate or its waiters (429)."""

    def __init__(
        self,
        message: str,
        code: str = "too_many_requests",
        status: int | None = 429,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code, status)
        self.retry_after = retry_after


class InvalidRequest(FencelockError):
    """The request was refused as malformed (400, 413, 414, 431); nothing changed."""


class Unavailable(FencelockError):
    """The server, or DynamoDB behind it, could not answer (503, or no connection);
    retrying later is safe. ``retry_after`` is the server's hint in seconds."""

    def __init__(
        self,
        message: str,
        code: str = "unavailable",
        status: int | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code, status)
        self.retry_after = retry_after


#: Codes that say a holding is over.
_LOST = {"fence_mismatch", "lease_expired", "not_found", "not_leader"}
#: Codes of a request the server refused as malformed.
_INVALID = {
    "invalid_request",
    "body_too_large",
    "uri_too_long",
    "headers_too_large",
    "method_not_allowed",
    "limit_mismatch",
    "lease_longer",
}


def _retry_after(headers: Any) -> float | None:
    raw = headers.get("retry-after") if headers is not None else None
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def error_from(status: int, body: Any, headers: Any, holding: bool) -> FencelockError:
    """The error for an answer of ``status`` with JSON ``body``. ``holding`` says the
    request named a holding (heartbeat, update, release), where ``not_found`` means
    the holding is gone."""
    if isinstance(body, dict):
        message = str(body.get("error") or f"fencelock answered {status}")
        code = str(body.get("code") or "")
    else:
        message, code = f"fencelock answered {status}", ""
    retry_after = _retry_after(headers)
    if code in ("lock_held", "semaphore_full", "election_led"):
        fence = body.get("fence") if isinstance(body, dict) else None
        expire = body.get("expireTime") if isinstance(body, dict) else None
        return LockHeld(
            message,
            code,
            status,
            fence=fence if isinstance(fence, int) else None,
            expire_time=expire if isinstance(expire, str) else None,
            retry_after=retry_after,
        )
    if code == "lock_disabled":
        return LockDisabled(message, code, status)
    if code in _LOST and (holding or code != "not_found"):
        return LockLost(message, code, status)
    if code == "not_holder":
        return NotHolder(message, code, status)
    if code == "unauthorized":
        return Unauthorized(message, code, status)
    if code == "forbidden":
        return Forbidden(message, code, status)
    if code == "too_many_requests":
        return RateLimited(message, code, status, retry_after=retry_after)
    if code in _INVALID:
        return InvalidRequest(message, code, status)
    if code == "unavailable" or status in (502, 503, 504):
        return Unavailable(message, code or "unavailable", status, retry_after=retry_after)
    return FencelockError(message, code, status)
