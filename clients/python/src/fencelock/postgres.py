"""Fences that PostgreSQL enforces: the fencing page's recipe 1 from Python (psycopg 3).

Install it with the extra, which adds psycopg (the core package keeps one dependency)::

    pip install './clients/python[postgres]'

The fence is advanced in the same transaction as the writes it protects, so that a
holder paused past its lease cannot write after a newer holder has: PostgreSQL refuses
its transaction (SQLSTATE ``FL409``) and rolls its writes back::

    import fencelock, psycopg
    from fencelock.postgres import fenced, install

    with psycopg.connect(dsn) as conn:
        install(conn)  # once: the fence table and fencelock_advance(), if missing
        with client.lock("nightly-backup", ttl="2m") as lease:
            with fenced(conn, lease):  # one transaction; raises StaleFence when stale
                conn.execute("INSERT INTO backups (day, tables) VALUES (current_date, %s)", (12,))

``fenced`` takes a lock's lease or a lock group's, whose fences are advanced together
in name order (so that two transactions of overlapping groups cannot deadlock). It
refuses a semaphore slot: a semaphore's holders hold at once and each has a higher
fence than the last granted, so one fence per name would refuse every holder but the
newest. A leadership (``client.leadership``) is fenced by its term, under the row
``election/{name}``, apart from the lock of the same name. ``advance`` is the step
alone, inside a transaction the caller manages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Protocol

try:
    import psycopg
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError(
        "fencelock.postgres needs psycopg 3: install the package with its extra, "
        "fencelock[postgres] (pip install './clients/python[postgres]')"
    ) from err

from ._errors import LockLost

__all__ = [
    "SCHEMA",
    "StaleFence",
    "advance",
    "advance_async",
    "fenced",
    "fenced_async",
    "install",
    "install_async",
]

#: The fence table and the function that advances a fence or refuses it: the same
#: text as the fencing page's first SQL block (the tests compare them).
SCHEMA = """\
CREATE TABLE IF NOT EXISTS fencelock_fences (
    lock_name text PRIMARY KEY,
    fence     bigint NOT NULL CHECK (fence > 0)
);

CREATE OR REPLACE FUNCTION fencelock_advance(lock_name text, fence bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO fencelock_fences AS f (lock_name, fence)
    VALUES (fencelock_advance.lock_name, fencelock_advance.fence)
    ON CONFLICT ON CONSTRAINT fencelock_fences_pkey DO UPDATE
        SET fence = EXCLUDED.fence
        WHERE f.fence <= EXCLUDED.fence;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'stale fence % for lock "%"', fence, lock_name
            USING ERRCODE = 'FL409',
                  HINT = 'a newer holder has written; this holder lost the lock';
    END IF;
END $$;
"""

#: The SQLSTATE ``fencelock_advance`` raises for a stale fence.
STALE = "FL409"


class StaleFence(LockLost):
    """PostgreSQL refused the fence: a newer holder of the lock has written, so this
    holder lost the lock; the transaction is rolled back. A ``LockLost``, so that one
    handler serves both ways of learning it."""

    def __init__(self, name: str, fence: int) -> None:
        super().__init__(
            f"stale fence {fence} for lock {name!r}: a newer holder has written",
            "stale_fence",
        )
        self.name = name
        self.fence = fence


class Fenced(Protocol):
    """What ``fenced`` reads of a lease: its kind and its fence per lock name."""

    @property
    def kind(self) -> str: ...

    @property
    def fences(self) -> Mapping[str, int]: ...


def _fences(lease: Fenced) -> list[tuple[str, int]]:
    if lease.kind == "semaphore":
        raise TypeError(
            "a semaphore's holders hold at once, each with a higher fence than the "
            "last granted: one fence per name would refuse all but the newest holder"
        )
    if lease.kind == "election":
        # A leader's terms are fenced under a row of their own, so that an election
        # and a lock of the same name never refuse each other's writes.
        return sorted((f"election/{name}", term) for name, term in lease.fences.items())
    return sorted(lease.fences.items())


def install(conn: psycopg.Connection[Any]) -> None:
    """Creates the fence table and ``fencelock_advance`` where they are missing."""
    with conn.transaction():
        conn.execute(SCHEMA)


async def install_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """``install`` on an asyncio connection."""
    async with conn.transaction():
        await conn.execute(SCHEMA)


def advance(conn: psycopg.Connection[Any], name: str, fence: int) -> None:
    """Advances ``name``'s fence to ``fence`` in the caller's open transaction, or
    raises ``StaleFence`` when a higher one was written. An equal fence passes: the
    same holder writing again. Leave the transaction on ``StaleFence``: it is aborted."""
    try:
        conn.execute("SELECT fencelock_advance(%s, %s)", (name, fence))
    except psycopg.Error as err:
        if err.sqlstate == STALE:
            raise StaleFence(name, fence) from err
        raise


async def advance_async(conn: psycopg.AsyncConnection[Any], name: str, fence: int) -> None:
    """``advance`` on an asyncio connection."""
    try:
        await conn.execute("SELECT fencelock_advance(%s, %s)", (name, fence))
    except psycopg.Error as err:
        if err.sqlstate == STALE:
            raise StaleFence(name, fence) from err
        raise


@contextmanager
def fenced(conn: psycopg.Connection[Any], lease: Fenced) -> Iterator[None]:
    """A transaction whose first step advances the lease's fences: the block's
    writes commit only if no newer holder has written. Raises ``StaleFence`` (with
    everything rolled back) when one has; any other error also rolls back."""
    fences = _fences(lease)
    with conn.transaction():
        for name, fence in fences:
            advance(conn, name, fence)
        yield


@asynccontextmanager
async def fenced_async(conn: psycopg.AsyncConnection[Any], lease: Fenced) -> AsyncIterator[None]:
    """``fenced`` on an asyncio connection."""
    fences = _fences(lease)
    async with conn.transaction():
        for name, fence in fences:
            await advance_async(conn, name, fence)
        yield
