"""What the sync and asyncio clients share: durations, nonces, the requests of each
kind of holding and the reading of their answers, and the holding's clock.

Nothing here sends anything: ``_sync`` and ``_async`` send the :class:`Call` objects
built here and hand the answers back.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from ._errors import FencelockError, Unavailable, error_from

Duration = str | int | float | _dt.timedelta
Kind = Literal["lock", "semaphore", "group", "election"]

#: The route root of each kind of single holding.
_ROOTS = {"lock": "locks", "semaphore": "semaphores", "election": "elections"}

NONCE_HEADER = "Lock-Nonce"
#: The longest nonce the server takes.
MAX_NONCE = 64
#: The most time between two tries of a heartbeat that failed, in seconds.
MAX_HEARTBEAT_RETRY = 1.0
#: The longest pause between two tries of a call that found the server unavailable.
MAX_RETRY_PAUSE = 2.0
#: How long a release may keep trying when the server is unavailable.
RELEASE_WITHIN = 5.0

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def seconds(value: Duration) -> float:
    """``value`` in seconds: ``"2m"``, ``"30s"``, ``"1500ms"``, ``"1h"``, a number of
    seconds, or a :class:`datetime.timedelta`."""
    if isinstance(value, _dt.timedelta):
        result = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(
                f"{value!r} is not a duration; expected for example '30s', '1500ms', '2m' "
                "or a number of seconds"
            )
        result = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise TypeError(f"a duration is a str, a number or a timedelta, not {type(value)}")
    if result < 0:
        raise ValueError(f"a duration cannot be negative: {value!r}")
    return result


def wire(value: float) -> str:
    """A duration in seconds as the server reads it: whole milliseconds."""
    return f"{round(value * 1000)}ms"


def fresh_nonce() -> str:
    """A nonce unique to one holding: the host, the process and 64 random bits."""
    host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:32] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(8)}"[-MAX_NONCE:]


def check_nonce(nonce: str) -> str:
    if not (1 <= len(nonce) <= MAX_NONCE) or not all("!" <= c <= "~" for c in nonce):
        raise ValueError("a nonce is 1 to 64 printable ASCII characters without spaces")
    return nonce


def parse_time(raw: str | None) -> _dt.datetime | None:
    if raw is None:
        return None
    return _dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))


def segment(name: str) -> str:
    """``name`` as one segment of a URL path."""
    return quote(name, safe=":")


@dataclass(frozen=True)
class Call:
    """One HTTP request. ``holding`` says it names a holding (a 404 then means the
    holding is gone)."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    holding: bool = False


def answer(status: int, body: Any, headers: Any, call: Call) -> Any:
    """The JSON of a 2xx answer, or raises the error the answer says."""
    if 200 <= status < 300:
        return body
    raise error_from(status, body, headers, call.holding)


@dataclass(frozen=True)
class Terms:
    """What an acquire asks for."""

    kind: Kind
    names: tuple[str, ...]
    nonce: str
    ttl: float | None
    owner: str | None
    metadata: Any
    limit: int | None = None
    #: An election candidate's value, proclaimed once it leads.
    value: str | None = None

    @classmethod
    def of(
        cls,
        kind: Kind,
        names: tuple[str, ...],
        ttl: Duration,
        owner: str | None,
        metadata: Any,
        nonce: str | None,
        limit: int | None = None,
        value: str | None = None,
    ) -> Terms:
        """The terms a caller gives: a fresh nonce unless one is given."""
        nonce = check_nonce(nonce) if nonce is not None else fresh_nonce()
        return cls(kind, names, nonce, seconds(ttl), owner, metadata, limit, value)

    def acquire(self, wait: float) -> Call:
        body: dict[str, Any] = {"nonce": self.nonce}
        if self.ttl is not None:
            body["ttl"] = wire(self.ttl)
        if wait > 0:
            body["wait"] = wire(wait)
        if self.owner is not None:
            body["owner"] = self.owner
        if self.metadata is not None:
            body["metadata"] = self.metadata
        if self.kind == "lock":
            return Call("POST", f"/locks/{segment(self.names[0])}", json=body)
        if self.kind == "election":
            body.pop("metadata", None)
            body["value"] = self.value or ""
            return Call("POST", f"/elections/{segment(self.names[0])}", json=body)
        if self.kind == "semaphore":
            body["limit"] = self.limit
            return Call("POST", f"/semaphores/{segment(self.names[0])}", json=body)
        body["names"] = list(self.names)
        return Call("POST", "/lock-groups", json=body)


@dataclass
class Granted:
    """What the server said of a holding: its fences by name, the body, the lease."""

    fences: dict[str, int]
    body: str
    ttl: float
    expire_time: str | None
    #: An operator asked the holder to release (``releaseRequestedTime``).
    release_requested: bool = False
    #: In an acquire's answer: the holder whose unreleased lease it took over
    #: (``tookOver``: its ``fence``, ``expireTime`` and ``owner``).
    took_over: dict[str, Any] | None = None


def granted(kind: Kind, view: Any) -> Granted:
    """The holding an acquire, heartbeat or update answered."""
    if kind == "election":
        leader = view.get("leader")
        if not isinstance(leader, dict):
            name = view.get("name")
            raise FencelockError(f"the server answered election {name!r} with no leader")
        return Granted(
            fences={str(view["name"]): int(leader["term"])},
            body=str(leader.get("value") or ""),
            ttl=seconds(str(leader["ttl"])),
            expire_time=leader.get("expireTime"),
        )
    locks = view["locks"] if kind == "group" else [view]
    first = locks[0]
    return Granted(
        fences={lock["name"]: int(lock["fence"]) for lock in locks},
        body=str(first.get("body") or ""),
        ttl=seconds(str(first["ttl"])),
        expire_time=first.get("expireTime"),
        release_requested=any(lock.get("releaseRequestedTime") for lock in locks),
        took_over=first.get("tookOver"),
    )


@dataclass(frozen=True)
class Held:
    """A holding, as heartbeat, update and release name it."""

    kind: Kind
    fences: dict[str, int]
    nonce: str

    def _root(self) -> str:
        ((name, fence),) = self.fences.items()
        return f"/{_ROOTS[self.kind]}/{segment(name)}/{fence}"

    def _locks(self) -> dict[str, Any]:
        return {"locks": [{"name": n, "fence": f} for n, f in self.fences.items()]}

    def heartbeat(self) -> Call:
        headers = {NONCE_HEADER: self.nonce}
        if self.kind == "group":
            return Call(
                "POST", "/lock-groups/heartbeat", json=self._locks(), headers=headers, holding=True
            )
        return Call("POST", f"{self._root()}/heartbeat", headers=headers, holding=True)

    def update(self, body: str) -> Call:
        if self.kind not in ("lock", "election"):
            raise TypeError(
                f"a {self.kind} holding has no body to update; only a lock (and a leader's "
                "value) has"
            )
        return Call(
            "POST",
            self._root(),
            content=body.encode(),
            holding=True,
            headers={NONCE_HEADER: self.nonce, "content-type": "text/plain"},
        )

    def release(self) -> Call:
        headers = {NONCE_HEADER: self.nonce}
        if self.kind == "group":
            return Call(
                "POST", "/lock-groups/release", json=self._locks(), headers=headers, holding=True
            )
        return Call("DELETE", self._root(), headers=headers, holding=True)


def lease_margin(ttl: float) -> float:
    """How much earlier than the server the client ends a lease: 1 % of it (the two
    machines' clocks need not tick at the same rate) and 10 ms (a timer wakes late,
    and the holder is told after that)."""
    return ttl / 100 + 0.010


class Clock:
    """A holding's lease as the client counts it, on the monotonic clock: it ends one
    lease after the *sending* of the last request the server confirmed (the acquire,
    a heartbeat or an update), less :func:`lease_margin`. The server started the
    lease no earlier than that sending, so loss is declared before the server could
    give the lock to anyone else, and not at the same instant.
    """

    def __init__(self, ttl: float, confirmed_sent: float) -> None:
        self.ttl = ttl
        self.confirmed_sent = confirmed_sent
        #: When the first of the heartbeats failing since the last confirmation failed.
        self.failing_since: float | None = None

    @property
    def deadline(self) -> float:
        return self.confirmed_sent + self.ttl - lease_margin(self.ttl)

    @property
    def interval(self) -> float:
        """Heartbeats are due every third of the lease."""
        return self.ttl / 3

    @property
    def retry(self) -> float:
        return min(self.ttl / 10, MAX_HEARTBEAT_RETRY)

    def confirm(self, sent: float, ttl: float) -> None:
        # A later confirmation may arrive first; keep the latest send.
        if sent > self.confirmed_sent:
            self.confirmed_sent = sent
        self.ttl = ttl
        self.failing_since = None

    def fail(self, now: float) -> bool:
        """Notes a failed heartbeat; answers whether heartbeats have now failed for a
        third of the lease (the holding is in danger)."""
        if self.failing_since is None:
            self.failing_since = now
        return now - self.failing_since >= self.ttl / 3

    def next_heartbeat(self, now: float) -> float:
        if self.failing_since is not None:
            return min(now + self.retry, self.deadline)
        return min(self.confirmed_sent + self.interval, self.deadline)


def jitter(pause: float) -> float:
    """``pause`` scaled by a random factor in [0.5, 1.0)."""
    return pause * (0.5 + random.random() / 2)


def acquire_pause(err: FencelockError, deadline: float) -> float:
    """How long to pause before acquiring again after ``err``, within a wait that
    ends at ``deadline`` (monotonic); raises ``err`` when it is final or the wait is
    over. A held lock is asked again at once (the server did the waiting); an
    unavailable server after its ``Retry-After`` (at most 2 s), with jitter."""
    left = deadline - time.monotonic()
    if left <= 0 or err.code not in ("lock_held", "semaphore_full", "election_led", "unavailable"):
        raise err
    if not isinstance(err, Unavailable):
        return 0.0
    hint = err.retry_after if err.retry_after is not None else 1.0
    return min(jitter(min(hint, MAX_RETRY_PAUSE)), left)


def release_pause(err: FencelockError, give_up: float) -> float | None:
    """How long to pause before releasing again after ``err``; ``None`` to give up
    (a release that is refused, or unavailable past ``give_up``)."""
    if isinstance(err, Unavailable) and time.monotonic() < give_up:
        return jitter(0.5)
    return None


def acquire_chunk(remaining: float, ttl: float | None) -> float:
    """How long one acquire request waits on the server: the rest of the wait, but at
    most a third of the lease, so that the lease's start (counted from the request's
    sending) is known within a third of it."""
    if ttl is None:
        return remaining
    return min(remaining, ttl / 3)


__all__ = ["Call", "Clock", "Duration", "FencelockError", "Granted", "Held", "Terms"]


#: The longest an event stream may stay silent: the server sends a comment every 15 s.
STREAM_SILENCE = 45.0
#: How long a watch waits before reconnecting, as the stream asks.
RECONNECT = 1.0


@dataclass(frozen=True)
class Change:
    """One event of a lock's stream: ``event`` is ``state`` (the first), ``acquired``,
    ``renewed``, ``updated``, ``released``, ``reserved``, ``expired``, ``deleted`` or
    ``gap`` (changes not seen one by one); ``id`` the lock's version after it (none for
    a gap); ``data`` the lock's view after it, or what the gap or deletion says. An
    election's stream names its changes ``elected``, ``proclaimed`` and ``resigned``
    instead of ``acquired``, ``updated`` and ``released``, and its ``data`` is the
    election's view, whose ``leader`` is ``None`` when nobody leads."""

    event: str
    id: int | None
    data: dict[str, Any]


class EventParser:
    """Turns the lines of a ``text/event-stream`` into :class:`Change` events."""

    def __init__(self) -> None:
        self._event: str | None = None
        self._id: int | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> Change | None:
        """The event that ``line`` completes (a blank line ends one), if any."""
        if line == "":
            event, id_, data = self._event, self._id, "\n".join(self._data)
            self._event, self._id, self._data = None, None, []
            if event is None:
                return None
            try:
                parsed = json.loads(data) if data else {}
            except ValueError:
                parsed = {"text": data}
            return Change(event, id_, parsed if isinstance(parsed, dict) else {"value": parsed})
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            self._event = value
        elif field == "id":
            self._id = int(value) if value.isdigit() else None
        elif field == "data":
            self._data.append(value)
        return None


def watch_call(name: str, last: int | None, root: str = "locks") -> Call:
    """The request of a lock's (or, with ``root="elections"``, an election's) event
    stream, from the event after ``last``."""
    headers = {"last-event-id": str(last)} if last is not None else {}
    return Call("GET", f"/{root}/{segment(name)}/events", headers=headers)
