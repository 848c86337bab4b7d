"""The blocking client: :class:`Client`, and the :class:`Lease` its holdings give,
kept alive by a heartbeat thread."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable
from types import TracebackType
from typing import Any, TypeVar

import httpx

from ._errors import FencelockError, LockLost, Unavailable
from ._lease import LeaseBase
from ._protocol import (
    RECONNECT,
    RELEASE_WITHIN,
    STREAM_SILENCE,
    Call,
    Change,
    Duration,
    EventParser,
    Granted,
    Terms,
    acquire_chunk,
    acquire_pause,
    answer,
    granted,
    release_pause,
    seconds,
    segment,
    watch_call,
)

log = logging.getLogger("fencelock")

F = TypeVar("F", bound=Callable[..., Any])
Callback = Callable[["Lease"], None]


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

    def watch(self, name: str, *, last_id: int | None = None) -> Generator[Change, None, None]:
        """The changes of the lock ``name`` as they happen (``GET /locks/{name}/events``):
        a ``state`` change first, then one per change, forever. When the connection
        drops or the server stops it reconnects after a second from the last change
        seen (``last_id``, to start after one seen before), so nothing the server
        still keeps is missed; what it no longer keeps comes as a ``gap``. An answer
        the server refuses (401, 403, 400) is raised. Break out of the loop to stop."""
        return self._stream("locks", name, last_id)

    def observe(self, name: str, *, last_id: int | None = None) -> Generator[Change, None, None]:
        """The leaders of the election ``name`` as they change
        (``GET /elections/{name}/events``), as :meth:`watch` follows a lock: each
        change's ``data["leader"]`` is the leader (``term``, ``value``, ``owner``,
        ``expireTime``), or ``None`` when nobody leads."""
        return self._stream("elections", name, last_id)

    def leader(self, name: str) -> dict[str, Any] | None:
        """The leader of the election ``name`` now (``term``, ``value``, ``owner``,
        ``expireTime``), or ``None`` when nobody leads."""
        view = self._send(Call("GET", f"/elections/{segment(name)}"))
        leader: dict[str, Any] | None = view.get("leader")
        return leader

    def _stream(self, root: str, name: str, last_id: int | None) -> Generator[Change, None, None]:
        last = last_id
        while True:
            call = watch_call(name, last, root)
            try:
                timeout = httpx.Timeout(self.timeout, read=STREAM_SILENCE)
                with self._http.stream(
                    "GET", call.path, headers=call.headers, timeout=timeout
                ) as response:
                    if response.status_code != 200:
                        response.read()
                        answer(response.status_code, response.json(), response.headers, call)
                    parser = EventParser()
                    for line in response.iter_lines():
                        change = parser.feed(line)
                        if change is not None:
                            last = change.id if change.id is not None else last
                            yield change
            except httpx.TransportError as err:
                log.info("the stream of %s broke (%s); reconnecting", name, err)
            time.sleep(RECONNECT)

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
        terms = Terms.of("lock", (name,), ttl, owner, metadata, nonce)
        return Lease(self, terms, seconds(wait), on_lost, on_danger)

    def leadership(
        self,
        name: str,
        *,
        value: str = "",
        ttl: Duration = "15s",
        wait: Duration = 0,
        owner: str | None = None,
        nonce: str | None = None,
        on_lost: Callback | None = None,
        on_danger: Callback | None = None,
    ) -> Lease:
        """Leadership of the election ``name``, as a context manager: ``with
        client.leadership("scheduler", value=my_address, wait="1h") as lead`` campaigns
        (standing up to ``wait`` while another candidate leads), renews the lease in
        the background, and resigns on leaving the block, so that the next candidate
        leads at once. ``lead.term`` is the term (a fence: send it with every write
        the leader makes), ``lead.proclaim(value)`` changes the value, and loss is
        told as for a lock (``lead.lost``, ``on_lost``, ``lead.check()``)."""
        terms = Terms.of("election", (name,), ttl, owner, None, nonce, value=value)
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
        terms = Terms.of("semaphore", (name,), ttl, owner, metadata, nonce, limit)
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
        terms = Terms.of("group", tuple(names), ttl, owner, metadata, nonce)
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
                time.sleep(acquire_pause(err, deadline))


class Lease(LeaseBase):
    """A holding of a lock, a semaphore's slot or a lock group, from acquire to
    release.

    While held, a thread heartbeats every third of the lease. ``lost`` is set (and
    ``on_lost`` called, once) when the server says the fence no longer holds, or when
    no heartbeat was confirmed within the lease as this process counts it; from then
    on :meth:`check` and :meth:`update` raise :class:`LockLost`. ``in_danger`` is set
    (and ``on_danger`` called) when heartbeats have failed for a third of the lease,
    and cleared when one succeeds.
    """

    lost: threading.Event
    in_danger: threading.Event
    release_requested: threading.Event

    def __init__(
        self,
        client: Client,
        terms: Terms,
        wait: float,
        on_lost: Callback | None,
        on_danger: Callback | None,
    ) -> None:
        super().__init__(terms, wait, on_lost, on_danger, guard=threading.Lock())
        self._client = client
        self.lost = threading.Event()
        self.in_danger = threading.Event()
        self.release_requested = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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

    def proclaim(self, value: str) -> None:
        """A leader's new value (``POST /elections/{name}/{term}``): everyone who asks
        who leads sees it; the lease is extended. Raises :class:`LockLost` once the
        leadership is lost."""
        self.update(value)
        self._proclaimed = value

    def acquire(self) -> Lease:
        """Takes the holding and starts its heartbeats; the context manager calls it."""
        grant, sent = self._client._acquire(self._terms, self._wait)
        held, clock, late = self._begin(grant, sent)
        if late:
            sent = time.monotonic()
            try:
                renewed = granted(self.kind, self._client._send(held.heartbeat()))
            except FencelockError:
                self._client._try(held.release())
                raise
            clock.confirm(sent, renewed.ttl)
            grant.expire_time = renewed.expire_time
        self._settle(held, clock, grant)
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
        held = self._releasable()
        if held is None:
            return
        give_up = time.monotonic() + RELEASE_WITHIN
        while True:
            try:
                self._client._send(held.release())
                return
            except FencelockError as err:
                pause = release_pause(err, give_up)
                if pause is None:
                    log.warning("could not release %s %s: %s", self.kind, self.name, err)
                    return
                time.sleep(pause)

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()
        self._left(error)

    def _keep(self) -> None:
        """The heartbeat thread."""
        held, clock = self._holding(), self._clock
        assert clock is not None
        last_failure = ""
        while not self._stop.is_set():
            now = time.monotonic()
            with self._guard:
                due, deadline = clock.next_heartbeat(now), clock.deadline
            if now >= deadline:
                self._ran_out(last_failure)
                return
            if self._stop.wait(max(0.0, due - now)):
                return
            if time.monotonic() >= deadline:
                continue
            sent = time.monotonic()
            timeout = max(0.001, min(self._client.timeout, deadline - sent))
            try:
                view = self._client._send(held.heartbeat(), timeout=timeout)
            except LockLost as err:
                self._declare_lost(str(err), silent=False)
                return
            except FencelockError as err:
                last_failure = str(err)
                self._failed(err)
                continue
            last_failure = ""
            self._confirm(sent, granted(self.kind, view))
