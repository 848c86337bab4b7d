"""Watching a lock from Python: the changes of a real server's stream, sync and async."""

from __future__ import annotations

import itertools
import queue
import threading

import pytest

import fencelock


def test_watch_yields_each_change_in_order(server: str, name: str) -> None:
    client = fencelock.Client(server)
    changes: queue.Queue[fencelock.Change] = queue.Queue()

    def follow() -> None:
        for change in itertools.islice(client.watch(name), 4):
            changes.put(change)

    watcher = threading.Thread(target=follow)
    watcher.start()
    # Each change is awaited before the next is made: writes faster than the server
    # reads them may come as a gap (changes not seen one by one).
    seen = [changes.get(timeout=20)]
    with client.lock(name, ttl="30s") as lease:
        seen.append(changes.get(timeout=20))
        lease.update("half")
        seen.append(changes.get(timeout=20))
    seen.append(changes.get(timeout=20))
    watcher.join(20)
    assert [c.event for c in seen] == ["state", "acquired", "updated", "released"]
    assert seen[0].data == {"name": name, "version": 0}
    versions = [c.id or 0 for c in seen]
    assert versions == sorted(versions) and len(set(versions)) == 4, versions
    assert seen[2].data["body"] == "half"
    assert "nonce" not in seen[1].data and "token" not in seen[1].data
    client.close()


def test_watch_from_a_change_seen_before_gets_only_what_followed(server: str, name: str) -> None:
    client = fencelock.Client(server)
    with client.lock(name, ttl="30s") as lease:
        watching = client.watch(name)
        first = next(watching)
        watching.close()
        lease.update("later")
        follow = client.watch(name, last_id=first.id)
        change = next(follow)
        follow.close()
    assert (change.event, change.data["body"]) == ("updated", "later")
    client.close()


def test_a_watch_the_server_refuses_raises(server: str) -> None:
    client = fencelock.Client(server)
    with pytest.raises(fencelock.InvalidRequest):
        next(client.watch("not a name"))
    client.close()


async def test_the_asyncio_watch(server: str, name: str) -> None:
    async with fencelock.AsyncClient(server) as client:
        changes = client.watch(name)
        state = await anext(changes)
        assert state.event == "state"
        async with client.lock(name, ttl="30s") as lease:
            acquired = await anext(changes)
            assert (acquired.event, acquired.data["fence"]) == ("acquired", lease.fence)
        released = await anext(changes)
        assert released.event == "released"
        await changes.aclose()
