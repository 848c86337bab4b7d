"""The blocking client: :class:`Client`, and the :class:`Lease` its holdings give,
kept alive by a heartbeat thread."""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

import httpx

from ._errors import FencelockError, LockLost, Unavailable
from ._protocol import (
    Call,
    Clock,
    Duration,
    Granted,
    Held,
    Kind,
    Terms,
    acquire_chunk,
    answer,
    check_nonce,
    fresh_nonce,
    granted,
    parse_time,
    seconds,
    segment,
)

log = logging.getLogger("fencelock")

F = TypeVar("F", bound=Callable[..., Any])
Callback = Callable[["Lease"], None]

#: The longest pause between two tries of a call that found the server unavailable.
MAX_RETRY_PAUSE = 2.0
#: How long a release may keep trying when the server is unavailable.
RELEASE_WITHIN = 5.0


def _jitter(pause: float) -> float:
    return pause * (0.5 + random.random() / 2)


class Client:
    """A client of the fencelock server at ``url``.

    ``token`` is sent as a bearer token; ``ca`` is a CA bundle to trust for HTTPS;
    ``timeout`` bounds each request (a waiting acquire waits on top of it).
    Connections are reused across calls; close the client (or use it as a context
    manager) when done.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        ca: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers=headers,
            verify=ca if ca else True,
            timeout=timeout,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- calls -----------------------------------------------------------------

    def _send(self, call: Call, timeout: float | None = None) -> Any:
        try:
            response = self._http.request(
                call.method,
                call.path,
                json=call.json,
                content=call.content,
                headers=call.headers,
                timeout=timeout if timeout is not None else self.timeout,
            )
        except httpx.TransportError as err:
            raise Unavailable(f"cannot reach fencelock at {self._http.base_url}: {err}") from err
        try:
            body = response.json()
        except ValueError:
            body = None
        return answer(response.status_code, body, response.headers, call)

    def _try(self, call: Call) -> None:
        """Sends ``call`` once, for a clean-up whose failure changes nothing."""
        try:
            self._send(call)
        except FencelockError as err:
            log.info("%s %s failed: %s", call.method, call.path, err)

    def status(self, name: str) -> dict[str, Any]:
        """The lock's status view (``GET /locks/{name}``)."""
        result: dict[str, Any] = self._send(Call("GET", f"/locks/{segment(name)}"))
        return result

    # -- holdings --------------------------------------------------------------

    def lock(
        self,
        name: str,
        *,
        ttl: Duration = "30s",
        wait: Duration = 0,
        owner: str | None = None,
        metadata: Any = None,
        nonce: str | None = None,
        on_lost: Callback | None = None,
        on_danger: Callback | None = None,
    ) -> Lease:
        """The lock ``name``, as a context manager: ``with client.lock(...) as lease``
        acquires (waiting up to ``wait``), heartbeats in the background, and releases
        on leaving the block."""
        terms = Terms("lock", (name,), _nonce(nonce), seconds(ttl), owner, metadata)
        return Lease(self, terms, seconds(wait), on_lost, on_danger)

    def semaphore(
        self,
        name: str,
        limit: int,
        *,
        ttl: Duration = "30s",
        wait: Duration = 0,
        owner: str | None = None,
        metadata: Any = None,
        nonce: str | None = None,
        on_lost: Callback | None = None,
        on_danger: Callback | None = None,
    ) -> Lease:
        """A slot of the semaphore ``name`` of ``limit`` slots, as :meth:`lock`."""
        terms = Terms("semaphore", (name,), _nonce(nonce), seconds(ttl), owner, metadata, limit)
        return Lease(self, terms, seconds(wait), on_lost, on_danger)

    def locks(
        self,
        names: Iterable[str],
        *,
        ttl: Duration = "30s",
        wait: Duration = 0,
        owner: str | None = None,
        metadata: Any = None,
        nonce: str | None = None,
        on_lost: Callback | None = None,
        on_danger: Callback | None = None,
    ) -> Lease:
        """Every lock of ``names`` at once or none (a lock group), as :meth:`lock`."""
        terms = Terms("group", tuple(names), _nonce(nonce), seconds(ttl), owner, metadata)
        return Lease(self, terms, seconds(wait), on_lost, on_danger)

    def locked(self, name: str, **terms: Any) -> Callable[[F], F]:
        """A decorator: the function runs under the lock ``name`` (terms as
        :meth:`lock`), and the lease is not passed to it."""

        def decorate(function: F) -> F:
            @functools.wraps(function)
            def run(*args: Any, **kwargs: Any) -> Any:
                with self.lock(name, **terms):
                    return function(*args, **kwargs)

            return run  # type: ignore[return-value]

        return decorate

    def _acquire(self, terms: Terms, wait: float) -> tuple[Granted, float]:
        """Acquires on the server's waiting acquire, in requests of at most a third of
        the lease; retries an unavailable server with the same nonce (a retried
        acquire never takes a second holding). Answers the grant and when the request
        that got it was sent."""
        deadline = time.monotonic() + wait
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            chunk = acquire_chunk(remaining, terms.ttl)
            sent = time.monotonic()
            try:
                view = self._send(terms.acquire(chunk), timeout=self.timeout + chunk)
                return granted(terms.kind, view), sent
            except FencelockError as err:
                left = deadline - time.monotonic()
                if left <= 0 or err.code not in ("lock_held", "semaphore_full", "unavailable"):
                    raise
                if isinstance(err, Unavailable):
                    hint = err.retry_after if err.retry_after is not None else 1.0
                    time.sleep(min(_jitter(min(hint, MAX_RETRY_PAUSE)), left))


def _nonce(nonce: str | None) -> str:
    return check_nonce(nonce) if nonce is not None else fresh_nonce()


class Lease:
    """A holding of a lock, a semaphore's slot or a lock group, from acquire to
    release.

    While held, a thread heartbeats every third of the lease. ``lost`` is set (and
    ``on_lost`` called, once) when the server says the fence no longer holds, or when
    no heartbeat was confirmed within the lease as this process counts it; from then
    on :meth:`check` and :meth:`update` raise :class:`LockLost`. ``in_danger`` is set
    (and ``on_danger`` called) when heartbeats have failed for a third of the lease,
    and cleared when one succeeds.
    """

    def __init__(
        self,
        client: Client,
        terms: Terms,
        wait: float,
        on_lost: Callback | None,
        on_danger: Callback | None,
    ) -> None:
        self._client = client
        self._terms = terms
        self._wait = wait
        self._on_lost = on_lost
        self._on_danger = on_danger
        self.lost = threading.Event()
        self.in_danger = threading.Event()
        self._stop = threading.Event()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None
        self._held: Held | None = None
        self._clock: Clock | None = None
        self._lost_reason = ""
        self._silent = False
        self.body = ""
        self.expire_time: str | None = None

    # -- what the holder reads ----------------------------------------------------

    @property
    def kind(self) -> Kind:
        return self._terms.kind

    @property
    def name(self) -> str:
        return self._terms.names[0]

    @property
    def names(self) -> tuple[str, ...]:
        return self._terms.names

    @property
    def fences(self) -> dict[str, int]:
        """Each lock's fence, by name (one entry unless this is a group)."""
        return dict(self._holding().fences)

    @property
    def fence(self) -> int:
        """The fence to send with every write this holding protects."""
        fences = self._holding().fences
        if len(fences) != 1:
            raise TypeError("a lock group has a fence per lock: read lease.fences")
        return next(iter(fences.values()))

    @property
    def expires_at(self) -> Any | None:
        """When the server last said the lease ends (its clock), as a datetime."""
        return parse_time(self.expire_time)

    @property
    def nonce(self) -> str:
        return self._terms.nonce

    def check(self) -> None:
        """Raises :class:`LockLost` if the holding is lost: call it between steps of
        long work, since Python cannot stop a running block."""
        if self.lost.is_set():
            raise LockLost(self._lost_reason, "lost")

    def update(self, body: str) -> None:
        """Saves ``body`` with the lock (what the next holder reads) and extends the
        lease; raises :class:`LockLost` rather than write once the holding is lost."""
        self.check()
        held = self._holding()
        sent = time.monotonic()
        try:
            view = self._client._send(held.update(body))
        except LockLost as err:
            self._declare_lost(str(err), silent=False)
            raise
        self._confirm(sent, granted(self.kind, view))

    # -- the holding's life ----------------------------------------------------

    def acquire(self) -> Lease:
        """Takes the holding and starts its heartbeats; the context manager calls it."""
        if self._held is not None:
            raise RuntimeError("this lease was acquired already; ask the client for another")
        grant, sent = self._client._acquire(self._terms, self._wait)
        held = Held(self.kind, grant.fences, self._terms.nonce)
        clock = Clock(grant.ttl, sent)
        if time.monotonic() > sent + clock.ttl * 2 / 3:
            # The answer came so late that the lease, counted from the request's
            # sending, is nearly over: confirm it before the holder relies on it.
            sent = time.monotonic()
            try:
                renewed = granted(self.kind, self._client._send(held.heartbeat()))
            except FencelockError:
                self._client._try(held.release())
                raise
            clock.confirm(sent, renewed.ttl)
            grant.expire_time = renewed.expire_time
        self._held, self._clock = held, clock
        self.body, self.expire_time = grant.body, grant.expire_time
        self._thread = threading.Thread(
            target=self._keep, name=f"fencelock heartbeat {self.name}", daemon=True
        )
        self._thread.start()
        return self

    def release(self) -> None:
        """Stops the heartbeats, then releases; nothing is sent about this holding
        afterwards. A release that fails is logged: the lease then ends on its own."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        held = self._held
        if held is None or (self.lost.is_set() and not self._silent):
            return
        give_up = time.monotonic() + RELEASE_WITHIN
        while True:
            try:
                self._client._send(held.release())
                return
            except Unavailable as err:
                if time.monotonic() >= give_up:
                    log.warning("could not release %s %s: %s", self.kind, self.name, err)
                    return
                time.sleep(_jitter(0.5))
            except FencelockError as err:
                log.warning("could not release %s %s: %s", self.kind, self.name, err)
                return

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()
        if error is None and self.lost.is_set():
            # The work may not have been exclusive: say so.
            raise LockLost(self._lost_reason, "lost")

    # -- the heartbeat thread ----------------------------------------------------

    def _holding(self) -> Held:
        if self._held is None:
            raise RuntimeError("the lease is not acquired yet: use `with client.lock(...)`")
        return self._held

    def _confirm(self, sent: float, grant: Granted) -> None:
        with self._guard:
            assert self._clock is not None
            self._clock.confirm(sent, grant.ttl)
            self.expire_time = grant.expire_time
        self.in_danger.clear()

    def _declare_lost(self, reason: str, silent: bool) -> None:
        with self._guard:
            if self.lost.is_set():
                return
            self._lost_reason = reason
            self._silent = silent
            self.lost.set()
        log.warning("lost %s %s: %s", self.kind, self.name, reason)
        if self._on_lost is not None:
            try:
                self._on_lost(self)
            except Exception:
                log.exception("the on_lost callback of %s %s failed", self.kind, self.name)

    def _keep(self) -> None:
        held, clock = self._holding(), self._clock
        assert clock is not None
        last_failure = ""
        while not self._stop.is_set():
            now = time.monotonic()
            with self._guard:
                due, deadline = clock.next_heartbeat(now), clock.deadline
            if now >= deadline:
                self._declare_lost(
                    "no heartbeat was confirmed before the lease would end"
                    + (f" (last failure: {last_failure})" if last_failure else ""),
                    silent=True,
                )
                return
            if self._stop.wait(max(0.0, due - now)):
                return
            if time.monotonic() >= deadline:
                continue
            sent = time.monotonic()
            try:
                view = self._client._send(
                    held.heartbeat(), timeout=max(0.001, min(self._client.timeout, deadline - sent))
                )
            except LockLost as err:
                self._declare_lost(str(err), silent=False)
                return
            except FencelockError as err:
                last_failure = str(err)
                with self._guard:
                    danger = clock.fail(time.monotonic())
                log.info("heartbeat of %s %s failed: %s; trying again", self.kind, self.name, err)
                if danger and not self.in_danger.is_set():
                    self.in_danger.set()
                    if self._on_danger is not None:
                        try:
                            self._on_danger(self)
                        except Exception:
                            log.exception("the on_danger callback failed")
                continue
            last_failure = ""
            self._confirm(sent, granted(self.kind, view))
