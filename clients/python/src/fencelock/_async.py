"""The asyncio client: :class:`AsyncClient`, the same calls as :class:`Client` with
``async``/``await``, and :class:`AsyncLease`, kept alive by a heartbeat task."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
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

    def watch(self, name: str, *, last_id: int | None = None) -> AsyncGenerator[Change, None]:
        """As :meth:`fencelock.Client.watch`: ``async for change in client.watch(name)``."""
        return self._stream("locks", name, last_id)

    def observe(self, name: str, *, last_id: int | None = None) -> AsyncGenerator[Change, None]:
        """As :meth:`fencelock.Client.observe`: ``async for change in client.observe(name)``."""
        return self._stream("elections", name, last_id)

    async def leader(self, name: str) -> dict[str, Any] | None:
        """As :meth:`fencelock.Client.leader`."""
        view = await self._send(Call("GET", f"/elections/{segment(name)}"))
        leader: dict[str, Any] | None = view.get("leader")
        return leader

    async def _stream(
        self, root: str, name: str, last_id: int | None
    ) -> AsyncGenerator[Change, None]:
        last = last_id
        while True:
            call = watch_call(name, last, root)
            try:
                timeout = httpx.Timeout(self.timeout, read=STREAM_SILENCE)
                async with self._http.stream(
                    "GET", call.path, headers=call.headers, timeout=timeout
                ) as response:
                    if response.status_code != 200:
                        await response.aread()
                        answer(response.status_code, response.json(), response.headers, call)
                    parser = EventParser()
                    async for line in response.aiter_lines():
                        change = parser.feed(line)
                        if change is not None:
                            last = change.id if change.id is not None else last
                            yield change
            except httpx.TransportError as err:
                log.info("the stream of %s broke (%s); reconnecting", name, err)
            await asyncio.sleep(RECONNECT)

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
        terms = Terms.of("lock", (name,), ttl, owner, metadata, nonce)
        return AsyncLease(self, terms, seconds(wait), on_lost, on_danger)

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
    ) -> AsyncLease:
        """As :meth:`fencelock.Client.leadership`: ``async with client.leadership(...)``."""
        terms = Terms.of("election", (name,), ttl, owner, None, nonce, value=value)
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
        terms = Terms.of("semaphore", (name,), ttl, owner, metadata, nonce, limit)
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
        terms = Terms.of("group", tuple(names), ttl, owner, metadata, nonce)
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
                await asyncio.sleep(acquire_pause(err, deadline))


class AsyncLease(LeaseBase):
    """As :class:`fencelock.Lease`, with ``lost`` and ``in_danger`` as
    :class:`asyncio.Event` and the heartbeats in a task."""

    lost: asyncio.Event
    in_danger: asyncio.Event
    release_requested: asyncio.Event

    def __init__(
        self,
        client: AsyncClient,
        terms: Terms,
        wait: float,
        on_lost: Callback | None,
        on_danger: Callback | None,
    ) -> None:
        super().__init__(terms, wait, on_lost, on_danger)
        self._client = client
        self.lost = asyncio.Event()
        self.in_danger = asyncio.Event()
        self.release_requested = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

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

    async def proclaim(self, value: str) -> None:
        """A leader's new value (``POST /elections/{name}/{term}``), as :meth:`update`."""
        await self.update(value)
        self._proclaimed = value

    async def acquire(self) -> AsyncLease:
        grant, sent = await self._client._acquire(self._terms, self._wait)
        held, clock, late = self._begin(grant, sent)
        if late:
            sent = time.monotonic()
            try:
                renewed = granted(self.kind, await self._client._send(held.heartbeat()))
            except FencelockError:
                await self._client._try(held.release())
                raise
            clock.confirm(sent, renewed.ttl)
            grant.expire_time = renewed.expire_time
        self._settle(held, clock, grant)
        self._task = asyncio.create_task(self._keep(), name=f"fencelock heartbeat {self.name}")
        return self

    async def release(self) -> None:
        """Stops the heartbeats, then releases; nothing is sent about this holding
        afterwards."""
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        held = self._releasable()
        if held is None:
            return
        give_up = time.monotonic() + RELEASE_WITHIN
        while True:
            try:
                await self._client._send(held.release())
                return
            except FencelockError as err:
                pause = release_pause(err, give_up)
                if pause is None:
                    log.warning("could not release %s %s: %s", self.kind, self.name, err)
                    return
                await asyncio.sleep(pause)

    async def __aenter__(self) -> AsyncLease:
        return await self.acquire()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self.release()
        self._left(error)

    async def _keep(self) -> None:
        """The heartbeat task."""
        held, clock = self._holding(), self._clock
        assert clock is not None
        last_failure = ""
        while not self._stop.is_set():
            now = time.monotonic()
            due, deadline = clock.next_heartbeat(now), clock.deadline
            if now >= deadline:
                self._ran_out(last_failure)
                return
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, due - now))
                return
            except asyncio.TimeoutError:
                pass
            if time.monotonic() >= deadline:
                continue
            sent = time.monotonic()
            timeout = max(0.001, min(self._client.timeout, deadline - sent))
            try:
                view = await self._client._send(held.heartbeat(), timeout=timeout)
            except LockLost as err:
                self._declare_lost(str(err), silent=False)
                return
            except FencelockError as err:
                last_failure = str(err)
                self._failed(err)
                continue
            last_failure = ""
            self._confirm(sent, granted(self.kind, view))
