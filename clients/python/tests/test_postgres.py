"""fencelock.postgres against a PostgreSQL the tests start, with leases of the real
server: a stale holder's transaction is refused and rolled back, the current holder's
goes through, and so does the same holder writing twice."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("FENCELOCK_POSTGRES_TESTS") == "skip":
    # Without PostgreSQL there is no libpq for psycopg to load either.
    pytest.skip("PostgreSQL is not installed", allow_module_level=True)

import psycopg
from proxy import Fault, Proxy

import fencelock
from fencelock.postgres import (
    SCHEMA,
    StaleFence,
    advance,
    fenced,
    fenced_async,
    install,
    install_async,
)

FENCING = Path(__file__).resolve().parents[3] / "docs" / "fencing.md"


@pytest.fixture
def dsn(postgres: str) -> str:
    """A database no other test uses."""
    name = f"py_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return postgres.replace("dbname=postgres", f"dbname={name}")


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        install(conn)
        conn.execute("CREATE TABLE backups (day int PRIMARY KEY, tables int NOT NULL)")
        yield conn


def save(conn: psycopg.Connection[Any], lease: Any, tables: int) -> None:
    with fenced(conn, lease):
        conn.execute(
            "INSERT INTO backups VALUES (1, %s) ON CONFLICT (day) DO UPDATE SET tables = %s",
            (tables, tables),
        )


def tables(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT tables FROM backups").fetchone()
    assert row is not None
    value: int = row[0]
    return value


def test_the_schema_is_the_fencing_pages_sql() -> None:
    first = re.findall(r"```sql\n(.*?)```", FENCING.read_text(), re.S)[0]
    assert first == SCHEMA


def test_install_twice_is_harmless(conn: psycopg.Connection[Any]) -> None:
    install(conn)
    advance(conn, "job", 3)
    install(conn)
    row = conn.execute("SELECT fence FROM fencelock_fences WHERE lock_name = 'job'").fetchone()
    assert row == (3,)


def test_a_stale_holder_is_refused_and_its_writes_rolled_back(
    server: str, name: str, conn: psycopg.Connection[Any]
) -> None:
    client = fencelock.Client(server)
    with client.lock(name, ttl="60s") as old:
        save(conn, old, 10)
        save(conn, old, 11)  # the same holder writing again
        old_fence = old.fence
        stale = _FrozenLease(old.kind, old.fences)
    with client.lock(name, ttl="60s") as new:
        assert new.fence > old_fence
        save(conn, new, 12)
    with pytest.raises(StaleFence) as refused:
        save(conn, stale, 99)
    assert isinstance(refused.value, fencelock.LockLost)
    assert (refused.value.name, refused.value.fence) == (name, old_fence)
    assert tables(conn) == 12


def test_a_holder_whose_lease_ran_out_is_refused_once_the_next_has_written(
    server: str, proxy: Proxy, name: str, conn: psycopg.Connection[Any]
) -> None:
    lease = fencelock.Client(proxy.url, timeout=1).lock(name, ttl="600ms").acquire()
    save(conn, lease, 1)
    # What the holder knew when it paused; its heartbeats never arrive meanwhile.
    paused = _FrozenLease(lease.kind, lease.fences)
    proxy.fault(Fault("drop_request", "/heartbeat"))
    with fencelock.Client(server).lock(name, ttl="60s", wait="10s") as next_holder:
        save(conn, next_holder, 2)
    with pytest.raises(StaleFence):
        save(conn, paused, 3)
    assert tables(conn) == 2
    lease.release()


def test_a_groups_fences_advance_together_or_not_at_all(
    server: str, name: str, conn: psycopg.Connection[Any]
) -> None:
    client = fencelock.Client(server)
    a, b = f"{name}-a", f"{name}-b"
    with client.locks([a, b], ttl="60s") as group:
        save(conn, group, 5)
        fences = group.fences
    with client.lock(b, ttl="60s") as single:
        save(conn, single, 6)
    with pytest.raises(StaleFence) as refused:
        save(conn, _FrozenLease("group", fences), 7)
    assert refused.value.name == b
    # a's fence did not move either: the transaction rolled back as a whole.
    row = conn.execute("SELECT fence FROM fencelock_fences WHERE lock_name = %s", (a,)).fetchone()
    assert row == (fences[a],)
    assert tables(conn) == 6


def test_a_semaphore_slot_is_refused_with_why(
    server: str, name: str, conn: psycopg.Connection[Any]
) -> None:
    with (
        fencelock.Client(server).semaphore(name, 2, ttl="60s") as slot,
        pytest.raises(TypeError, match="semaphore"),
    ):
        save(conn, slot, 1)


async def test_the_asyncio_helpers(server: str, name: str, dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await install_async(conn)
        await conn.execute("CREATE TABLE notes (body text)")
        client = fencelock.AsyncClient(server)
        async with client.lock(name, ttl="60s") as old:
            stale = _FrozenLease(old.kind, old.fences)
        async with client.lock(name, ttl="60s") as new, fenced_async(conn, new):
            await conn.execute("INSERT INTO notes VALUES ('new')")
        with pytest.raises(StaleFence):
            async with fenced_async(conn, stale):
                await conn.execute("INSERT INTO notes VALUES ('stale')")
        rows = await (await conn.execute("SELECT body FROM notes")).fetchall()
        assert rows == [("new",)]
        await client.aclose()


def test_the_fencing_pages_python_examples_run(
    dsn: str, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    examples = re.findall(r"```python\n(.*?)```", FENCING.read_text(), re.S)
    assert len(examples) >= 2
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE backups (day date PRIMARY KEY, tables int NOT NULL)")
        setup.execute("CREATE TABLE reports (id int PRIMARY KEY, body text NOT NULL DEFAULT '')")
        setup.execute("ALTER TABLE reports ADD COLUMN fence bigint NOT NULL DEFAULT 0")
        setup.execute("INSERT INTO reports (id) VALUES (7)")
    monkeypatch.setenv("DATABASE_URL", dsn)
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    for example in examples:
        code = example.replace("http://localhost:12345", server)
        exec(compile(code, str(FENCING), "exec"), namespace)
    with psycopg.connect(dsn, autocommit=True) as check:
        assert check.execute("SELECT tables FROM backups").fetchone() == (120,)
        # Recipe 2's function: a newer fence writes, a stale one is refused.
        save_report = namespace["save_report"]
        save_report(check, 7, "new holder", 42)
        with pytest.raises(RuntimeError, match="stale fence 41"):
            save_report(check, 7, "stale holder", 41)
        assert check.execute("SELECT body FROM reports").fetchone() == ("new holder",)


class _FrozenLease:
    """What a holder knew before it paused: its kind and fences."""

    def __init__(self, kind: str, fences: dict[str, int]) -> None:
        self.kind = kind
        self.fences = dict(fences)
