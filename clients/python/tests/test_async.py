"""The asyncio client keeps the same promises as the blocking one."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import httpx
import pytest
from proxy import Fault, Proxy

import fencelock


async def test_a_lock_is_held_across_its_lease_updated_and_released(server: str, name: str) -> None:
    async with fencelock.AsyncClient(server, timeout=5) as client:
        async with client.lock(name, ttl="1s") as lease:
            await asyncio.sleep(1.5)
            assert not lease.lost.is_set()
            await lease.update("checkpoint")
            assert (await client.status(name))["held"] is True
        status = await client.status(name)
        assert status["held"] is False and status["body"] == "checkpoint"
        async with client.locks([f"{name}-a", f"{name}-b"]) as group:
            assert len(group.fences) == 2
        async with client.semaphore(name, 2) as slot:
            assert slot.fence > 0


async def test_loss_is_declared_before_the_server_lease_ends_when_unreachable(
    server: str, proxy: Proxy, name: str
) -> None:
    async with fencelock.AsyncClient(proxy.url, timeout=1) as client:
        lost_at: list[dt.datetime] = []
        lease = await client.lock(
            name, ttl="1500ms", on_lost=lambda _: lost_at.append(dt.datetime.now(dt.timezone.utc))
        ).acquire()
        proxy.fault(Fault("refuse"))
        await asyncio.wait_for(lease.lost.wait(), 5)
        with pytest.raises(fencelock.LockLost):
            lease.check()
        with pytest.raises(fencelock.LockLost):
            await lease.update("late")
        proxy.fault(None)
        async with fencelock.AsyncClient(server) as direct:
            status = await direct.status(name)
        server_end = dt.datetime.fromisoformat(status["expireTime"].replace("Z", "+00:00"))
        assert lost_at and lost_at[0] < server_end, (lost_at, server_end)
        with pytest.raises(fencelock.LockLost):
            await lease.__aexit__(None, None, None)


async def test_the_block_exception_propagates_and_nothing_is_sent_afterwards(
    proxy: Proxy, name: str
) -> None:
    async with fencelock.AsyncClient(proxy.url, timeout=2) as client:
        with pytest.raises(KeyError):
            async with client.lock(name, ttl="1s"):
                await asyncio.sleep(1.2)
                raise KeyError("the job failed")
        left = time.monotonic()
        await asyncio.sleep(1.0)
        assert proxy.requests(name, since=left) == []
        assert proxy.requests(name)[-1].method == "DELETE"
        assert (await client.status(name))["held"] is False


async def test_lost_heartbeat_answers_do_not_lose_the_lease(proxy: Proxy, name: str) -> None:
    client = fencelock.AsyncClient(proxy.url, timeout=2)
    async with client.lock(name, ttl="1500ms") as lease:
        for _ in range(4):
            proxy.fault(Fault("drop_answer", "/heartbeat", times=1))
            await asyncio.sleep(0.75)
        assert not lease.lost.is_set()
    await client.aclose()
    assert len([s for s in proxy.requests("/heartbeat") if s.fault == "drop_answer"]) >= 3


async def test_a_wait_is_served_by_the_servers_waiting_acquire(server: str, name: str) -> None:
    async with fencelock.AsyncClient(server, timeout=5) as client:
        holder = await client.lock(name, ttl="5s").acquire()
        with pytest.raises(fencelock.LockHeld):
            await client.lock(name).acquire()

        async def release_soon() -> None:
            await asyncio.sleep(0.5)
            await holder.release()

        task = asyncio.create_task(release_soon())
        async with client.lock(name, wait="10s") as waiter:
            assert waiter.fence > holder.fence
        await task


async def test_a_holder_whose_lock_another_took_raises_on_check_update_and_exit(
    server: str, name: str
) -> None:
    async with fencelock.AsyncClient(server, timeout=5) as client:
        with pytest.raises(fencelock.LockLost):
            async with client.lock(name, ttl="900ms") as lease:
                usurper = await client.lock(name, nonce=lease.nonce).acquire()
                await asyncio.wait_for(lease.lost.wait(), 3)
                with pytest.raises(fencelock.LockLost):
                    await lease.update("late write")
        status = await client.status(name)
        assert status["fence"] == usurper.fence and status["body"] == ""
        await usurper.release()


async def test_a_retried_acquire_takes_one_slot_and_503s_are_retried(
    proxy: Proxy, name: str
) -> None:
    async with fencelock.AsyncClient(proxy.url, timeout=1) as client:
        proxy.fault(Fault("drop_answer", "POST /semaphores/", times=1))
        async with client.semaphore(name, 2, wait="5s") as slot:
            view = await client._send(fencelock._protocol.Call("GET", f"/semaphores/{name}"))
            assert [h["fence"] for h in view["holders"]] == [slot.fence]
        proxy.fault(Fault("unavailable", f"POST /locks/{name}", times=2))
        async with client.lock(name, wait="10s"):
            pass
        assert len(proxy.requests(f"POST /locks/{name}$")) == 3


async def test_failing_heartbeats_signal_danger_then_recover(proxy: Proxy, name: str) -> None:
    warned: list[str] = []
    async with (
        fencelock.AsyncClient(proxy.url, timeout=0.5) as client,
        client.lock(name, ttl="3s", on_danger=lambda lease: warned.append(lease.name)) as lease,
    ):
        proxy.fault(Fault("unavailable", "/heartbeat"))
        await asyncio.wait_for(lease.in_danger.wait(), 4)
        assert warned == [name] and not lease.lost.is_set()
        proxy.fault(None)
        for _ in range(60):
            if not lease.in_danger.is_set():
                break
            await asyncio.sleep(0.05)
        assert not lease.in_danger.is_set() and not lease.lost.is_set()


async def test_an_operators_ask_to_release_is_seen_and_check_raises_it(
    server: str, name: str
) -> None:
    async with fencelock.AsyncClient(server, timeout=5) as client:
        with pytest.raises(fencelock.ReleaseRequested):
            async with client.lock(name, ttl="600ms") as lease:
                async with httpx.AsyncClient() as operator:
                    answer = await operator.post(f"{server}/admin/locks/{name}/ask-release")
                    answer.raise_for_status()
                await asyncio.wait_for(lease.release_requested.wait(), 5)
                assert not lease.lost.is_set()
                lease.check()
        status = await client.status(name)
        assert status["held"] is False and status["expireTime"] is None
