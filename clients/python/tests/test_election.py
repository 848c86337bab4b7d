"""Leader election from Python against a real server: leadership as a context
manager, the leader and its observers, sync and async."""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading

import pytest

import fencelock


def test_leadership_campaigns_leads_proclaims_and_resigns(server: str, name: str) -> None:
    client = fencelock.Client(server)
    assert client.leader(name) is None
    with client.leadership(name, value="10.0.0.1:80", ttl="30s") as lead:
        now = client.leader(name)
        assert now is not None
        assert (now["term"], now["value"]) == (lead.term, "10.0.0.1:80")
        assert lead.fence == lead.term and lead.value == "10.0.0.1:80"
        lead.proclaim("10.0.0.2:80")
        assert lead.value == "10.0.0.2:80"
        assert (client.leader(name) or {})["value"] == "10.0.0.2:80"
        # Nobody else leads meanwhile; a lock of the same name is another thing.
        with pytest.raises(fencelock.LockHeld) as held, client.leadership(name, value="other"):
            pass
        assert held.value.code == "election_led"
        with client.lock(name, ttl="5s") as lock:
            assert lock.fence > 0
    assert client.leader(name) is None, "leaving the block resigned"
    client.close()


def test_the_next_candidate_leads_as_soon_as_the_leader_resigns(server: str, name: str) -> None:
    client = fencelock.Client(server)
    terms: queue.Queue[int] = queue.Queue()
    first = client.leadership(name, value="a", ttl="30s").acquire()

    def stand() -> None:
        with client.leadership(name, value="b", wait="20s") as lead:
            terms.put(lead.term)

    standby = threading.Thread(target=stand)
    standby.start()
    with pytest.raises(queue.Empty):
        terms.get(timeout=0.5)
    first.release()
    assert terms.get(timeout=10) > first.term
    standby.join(10)
    client.close()


def test_a_leader_whose_heartbeats_are_refused_knows_it_lost(server: str, name: str) -> None:
    client = fencelock.Client(server)
    lost = threading.Event()
    leadership = client.leadership(name, ttl="3s", on_lost=lambda _: lost.set())
    with pytest.raises(fencelock.LockLost), leadership as lead:
        # Another term takes over (as after this leader's lease ran out elsewhere).
        client._send(fencelock._protocol.Call("DELETE", f"/elections/{name}/{lead.term}"))
        with client.leadership(name, value="usurper"):
            assert lost.wait(10), "the next heartbeat said the term leads no more"
            lead.check()
    client.close()


def test_observe_yields_each_leader_and_no_leader(server: str, name: str) -> None:
    client = fencelock.Client(server)
    changes: queue.Queue[fencelock.Change] = queue.Queue()

    def follow() -> None:
        for change in itertools.islice(client.observe(name), 4):
            changes.put(change)

    watcher = threading.Thread(target=follow)
    watcher.start()
    seen = [changes.get(timeout=20)]
    with client.leadership(name, value="a", ttl="30s") as lead:
        seen.append(changes.get(timeout=20))
        lead.proclaim("b")
        seen.append(changes.get(timeout=20))
    seen.append(changes.get(timeout=20))
    watcher.join(20)
    assert [c.event for c in seen] == ["state", "elected", "proclaimed", "resigned"]
    assert seen[0].data["leader"] is None
    assert seen[1].data["leader"]["term"] == lead.term
    assert seen[2].data["leader"]["value"] == "b"
    assert seen[3].data["leader"] is None
    client.close()


def test_async_leadership_and_observe(server: str, name: str) -> None:
    async def main() -> None:
        client = fencelock.AsyncClient(server)
        observed = client.observe(name)
        assert (await anext(observed)).event == "state"
        async with client.leadership(name, value="async", ttl="30s") as lead:
            elected = await anext(observed)
            assert (elected.event, elected.data["leader"]["term"]) == ("elected", lead.term)
            await lead.proclaim("moved")
            assert (await client.leader(name) or {})["value"] == "moved"
        await observed.aclose()
        assert await client.leader(name) is None
        await client.aclose()

    asyncio.run(main())
