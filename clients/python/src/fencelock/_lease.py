"""What :class:`fencelock.Lease` and :class:`fencelock.AsyncLease` share: what the
holder reads, the holding's clock, and the declaring of loss and danger. The two
differ only in how they wait and send (a thread or a task)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from ._errors import LockLost, ReleaseRequested
from ._protocol import Clock, Granted, Held, Kind, Terms, parse_time

log = logging.getLogger("fencelock")


class Flag(Protocol):
    """An event: :class:`threading.Event` or :class:`asyncio.Event`."""

    def is_set(self) -> bool: ...
    def set(self) -> None: ...
    def clear(self) -> None: ...


class LeaseBase:
    lost: Flag
    in_danger: Flag
    #: Set once a heartbeat's answer says an operator asked for a release.
    release_requested: Flag

    def __init__(
        self,
        terms: Terms,
        wait: float,
        on_lost: Callable[[Any], None] | None,
        on_danger: Callable[[Any], None] | None,
        guard: contextlib.AbstractContextManager[Any] | None = None,
    ) -> None:
        self._terms = terms
        self._wait = wait
        self._on_lost = on_lost
        self._on_danger = on_danger
        self._guard = guard if guard is not None else contextlib.nullcontext()
        self._held: Held | None = None
        self._clock: Clock | None = None
        self._lost_reason = ""
        self._silent = False
        self.body = ""
        self._proclaimed: str | None = None
        self.expire_time: str | None = None
        #: When the acquire took the lock over from a holder whose lease ran out
        #: without a release, that holder (``fence``, ``expireTime``, ``owner``): it
        #: may have stopped mid-work, so read ``body`` before going on.
        self.took_over: dict[str, Any] | None = None

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
    def term(self) -> int:
        """A leadership's term: its fence, greater than every term before it."""
        return self.fence

    @property
    def value(self) -> str:
        """A leadership's value: as campaigned with, or as last proclaimed."""
        return self._proclaimed if self._proclaimed is not None else self.body

    @property
    def expires_at(self) -> Any | None:
        """When the server last said the lease ends (its clock), as a datetime."""
        return parse_time(self.expire_time)

    @property
    def nonce(self) -> str:
        return self._terms.nonce

    def check(self) -> None:
        """Raises :class:`LockLost` if the holding is lost, and
        :class:`ReleaseRequested` if an operator asked for it to be released: call it
        between steps of long work, since Python cannot stop a running block."""
        if self.lost.is_set():
            raise LockLost(self._lost_reason, "lost")
        if self.release_requested.is_set():
            raise ReleaseRequested(
                f"an operator asked for {self.kind} {self.name} to be released",
                "release_requested",
            )

    # -- the holding's state ----------------------------------------------------

    def _holding(self) -> Held:
        if self._held is None:
            raise RuntimeError("the lease is not acquired yet: use `with client.lock(...)`")
        return self._held

    def _begin(self, grant: Granted, sent: float) -> tuple[Held, Clock, bool]:
        """The holding a grant gives, its clock, and whether its answer came so late
        (under a third of the lease left, counted from the sending) that a heartbeat
        must confirm it before the holder relies on it."""
        if self._held is not None:
            raise RuntimeError("this lease was acquired already; ask the client for another")
        clock = Clock(grant.ttl, sent)
        late = time.monotonic() > sent + clock.ttl * 2 / 3
        return Held(self.kind, grant.fences, self._terms.nonce), clock, late

    def _settle(self, held: Held, clock: Clock, grant: Granted) -> None:
        self._held, self._clock = held, clock
        self.body, self.expire_time = grant.body, grant.expire_time
        self.took_over = grant.took_over

    def _confirm(self, sent: float, grant: Granted) -> None:
        with self._guard:
            assert self._clock is not None
            self._clock.confirm(sent, grant.ttl)
            self.expire_time = grant.expire_time
        self.in_danger.clear()
        if grant.release_requested and not self.release_requested.is_set():
            log.warning("an operator asked for %s %s to be released", self.kind, self.name)
            self.release_requested.set()

    def _failed(self, err: Exception) -> None:
        """Notes a failed heartbeat, and says the holding is in danger once they have
        failed for a third of the lease."""
        log.info("heartbeat of %s %s failed: %s; trying again", self.kind, self.name, err)
        with self._guard:
            assert self._clock is not None
            danger = self._clock.fail(time.monotonic())
        if danger and not self.in_danger.is_set():
            self.in_danger.set()
            self._call(self._on_danger, "on_danger")

    def _declare_lost(self, reason: str, silent: bool) -> None:
        with self._guard:
            if self.lost.is_set():
                return
            self._lost_reason = reason
            self._silent = silent
            self.lost.set()
        log.warning("lost %s %s: %s", self.kind, self.name, reason)
        self._call(self._on_lost, "on_lost")

    def _ran_out(self, last_failure: str) -> None:
        self._declare_lost(
            "no heartbeat was confirmed before the lease would end"
            + (f" (last failure: {last_failure})" if last_failure else ""),
            silent=True,
        )

    def _releasable(self) -> Held | None:
        """The holding to release on leaving: none after a loss the server announced."""
        if self._held is None or (self.lost.is_set() and not self._silent):
            return None
        return self._held

    def _call(self, callback: Callable[[Any], None] | None, what: str) -> None:
        if callback is None:
            return
        try:
            callback(self)
        except Exception:
            log.exception("the %s callback of %s %s failed", what, self.kind, self.name)

    def _left(self, error: BaseException | None) -> None:
        """On leaving the block: work after a loss was not exclusive, so say so."""
        if error is None and self.lost.is_set():
            raise LockLost(self._lost_reason, "lost")
