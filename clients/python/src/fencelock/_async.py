"""The asyncio client: :class:`AsyncClient`, the same calls as :class:`Client` with
``async``/``await``, and :class:`AsyncLease`, kept alive by a heartbeat task."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
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
from ._sync import MAX_RETRY_PAUSE, RELEASE_WITHIN, _jitter

log = logging.getLogger("fencelock")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
Callback = Callable[["AsyncLease"], None]


class AsyncClient:
    """As :class:`fencelock.Client`, for asyncio."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        ca: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers=headers,
            verify=ca if ca else True,
            timeout=timeout,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call, timeout: float | None = None) -> Any:
        try:
            response = await self._http.request(
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

    async def _try(self, call: Call) -> None:
        """Sends ``call`` once, for a clean-up whose failure changes nothing."""
        try:
            await self._send(call)
        except FencelockError as err:
            log.info("%s %s failed: %s", call.method, call.path, err)

    async def status(self, name: str) -> dict[str, Any]:
        """The lock's status view (``GET /locks/{name}``)."""
        result: dict[str, Any] = await self._send(Call("GET", f"/locks/{segment(name)}"))
        return result

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
    ) -> AsyncLease:
        """The lock ``name``: ``async with client.lock(...) as lease``."""
        terms = Terms("lock", (name,), _nonce(nonce), seconds(ttl), owner, metadata)
        return AsyncLease(self, terms, seconds(wait), on_lost, on_danger)

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
    ) -> AsyncLease:
        """A slot of the semaphore ``name`` of ``limit`` slots."""
        terms = Terms("semaphore", (name,), _nonce(nonce), seconds(ttl), owner, metadata, limit)
        return AsyncLease(self, terms, seconds(wait), on_lost, on_danger)

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
    ) -> AsyncLease:
        """Every lock of ``names`` at once or none (a lock group)."""
        terms = Terms("group", tuple(names), _nonce(nonce), seconds(ttl), owner, metadata)
        return AsyncLease(self, terms, seconds(wait), on_lost, on_danger)

    def locked(self, name: str, **terms: Any) -> Callable[[F], F]:
        """A decorator: the coroutine function runs under the lock ``name``."""

        def decorate(function: F) -> F:
            @functools.wraps(function)
            async def run(*args: Any, **kwargs: Any) -> Any:
                async with self.lock(name, **terms):
                    return await function(*args, **kwargs)

            return run  # type: ignore[return-value]

        return decorate

    async def _acquire(self, terms: Terms, wait: float) -> tuple[Granted, float]:
        """As :meth:`fencelock.Client._acquire`."""
        deadline = time.monotonic() + wait
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            chunk = acquire_chunk(remaining, terms.ttl)
            sent = time.monotonic()
            try:
                view = await self._send(terms.acquire(chunk), timeout=self.timeout + chunk)
                return granted(terms.kind, view), sent
            except FencelockError as err:
                left = deadline - time.monotonic()
                if left <= 0 or err.code not in ("lock_held", "semaphore_full", "unavailable"):
                    raise
                if isinstance(err, Unavailable):
                    hint = err.retry_after if err.retry_after is not None else 1.0
                    await asyncio.sleep(min(_jitter(min(hint, MAX_RETRY_PAUSE)), left))


def _nonce(nonce: str | None) -> str:
    return check_nonce(nonce) if nonce is not None else fresh_nonce()


class AsyncLease:
    """As :class:`fencelock.Lease`, with ``lost`` and ``in_danger`` as
    :class:`asyncio.Event` and the heartbeats in a task."""

    def __init__(
        self,
        client: AsyncClient,
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
        self.lost = asyncio.Event()
        self.in_danger = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._held: Held | None = None
        self._clock: Clock | None = None
        self._lost_reason = ""
        self._silent = False
        self.body = ""
        self.expire_time: str | None = None

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
        return dict(self._holding().fences)

    @property
    def fence(self) -> int:
        fences = self._holding().fences
        if len(fences) != 1:
            raise TypeError("a lock group has a fence per lock: read lease.fences")
        return next(iter(fences.values()))

    @property
    def expires_at(self) -> Any | None:
        return parse_time(self.expire_time)

    @property
    def nonce(self) -> str:
        return self._terms.nonce

    def check(self) -> None:
        """Raises :class:`LockLost` if the holding is lost."""
        if self.lost.is_set():
            raise LockLost(self._lost_reason, "lost")

    async def update(self, body: str) -> None:
        """Saves ``body`` with the lock and extends the lease; raises
        :class:`LockLost` rather than write once the holding is lost."""
        self.check()
        held = self._holding()
        sent = time.monotonic()
        try:
            view = await self._client._send(held.update(body))
        except LockLost as err:
            self._declare_lost(str(err), silent=False)
            raise
        self._confirm(sent, granted(self.kind, view))

    async def acquire(self) -> AsyncLease:
        if self._held is not None:
            raise RuntimeError("this lease was acquired already; ask the client for another")
        grant, sent = await self._client._acquire(self._terms, self._wait)
        held = Held(self.kind, grant.fences, self._terms.nonce)
        clock = Clock(grant.ttl, sent)
        if time.monotonic() > sent + clock.ttl * 2 / 3:
            # As in Lease.acquire: confirm a lease whose answer came late.
            sent = time.monotonic()
            try:
                renewed = granted(self.kind, await self._client._send(held.heartbeat()))
            except FencelockError:
                await self._client._try(held.release())
                raise
            clock.confirm(sent, renewed.ttl)
            grant.expire_time = renewed.expire_time
        self._held, self._clock = held, clock
        self.body, self.expire_time = grant.body, grant.expire_time
        self._task = asyncio.create_task(self._keep(), name=f"fencelock heartbeat {self.name}")
        return self

    async def release(self) -> None:
        """Stops the heartbeats, then releases; nothing is sent about this holding
        afterwards."""
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        held = self._held
        if held is None or (self.lost.is_set() and not self._silent):
            return
        give_up = time.monotonic() + RELEASE_WITHIN
        while True:
            try:
                await self._client._send(held.release())
                return
            except Unavailable as err:
                if time.monotonic() >= give_up:
                    log.warning("could not release %s %s: %s", self.kind, self.name, err)
                    return
                await asyncio.sleep(_jitter(0.5))
            except FencelockError as err:
                log.warning("could not release %s %s: %s", self.kind, self.name, err)
                return

    async def __aenter__(self) -> AsyncLease:
        return await self.acquire()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.release()
        if error is None and self.lost.is_set():
            raise LockLost(self._lost_reason, "lost")

    def _holding(self) -> Held:
        if self._held is None:
            raise RuntimeError("the lease is not acquired yet: use `async with client.lock(...)`")
        return self._held

    def _confirm(self, sent: float, grant: Granted) -> None:
        assert self._clock is not None
        self._clock.confirm(sent, grant.ttl)
        self.expire_time = grant.expire_time
        self.in_danger.clear()

    def _declare_lost(self, reason: str, silent: bool) -> None:
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

    async def _keep(self) -> None:
        held, clock = self._holding(), self._clock
        assert clock is not None
        last_failure = ""
        while not self._stop.is_set():
            now = time.monotonic()
            due, deadline = clock.next_heartbeat(now), clock.deadline
            if now >= deadline:
                self._declare_lost(
                    "no heartbeat was confirmed before the lease would end"
                    + (f" (last failure: {last_failure})" if last_failure else ""),
                    silent=True,
                )
                return
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, due - now))
                return
            except asyncio.TimeoutError:
                pass
            if time.monotonic() >= deadline:
                continue
            sent = time.monotonic()
            try:
                view = await self._client._send(
                    held.heartbeat(), timeout=max(0.001, min(self._client.timeout, deadline - sent))
                )
            except LockLost as err:
                self._declare_lost(str(err), silent=False)
                return
            except FencelockError as err:
                last_failure = str(err)
                log.info("heartbeat of %s %s failed: %s; trying again", self.kind, self.name, err)
                if clock.fail(time.monotonic()) and not self.in_danger.is_set():
                    self.in_danger.set()
                    if self._on_danger is not None:
                        try:
                            self._on_danger(self)
                        except Exception:
                            log.exception("the on_danger callback failed")
                continue
            last_failure = ""
            self._confirm(sent, granted(self.kind, view))
