"""The blocking client against a real server, with faults from the proxy: each test
is one promise of docs/python.md."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

import httpx
import pytest
from proxy import Fault, Pipe, Proxy

import fencelock


def direct(server: str) -> fencelock.Client:
    return fencelock.Client(server, timeout=5)


def test_a_lock_is_taken_heartbeated_updated_and_released(server: str, name: str) -> None:
    client = direct(server)
    with client.lock(name, ttl="1s") as lease:
        assert lease.fence > 0 and lease.body == ""
        first_expiry = lease.expires_at
        time.sleep(1.5)  # Past the first lease: only heartbeats keep it.
        assert not lease.lost.is_set()
        assert client.status(name)["held"] is True
        lease.update("step 1 done")
        assert lease.expires_at is not None and first_expiry is not None
        assert lease.expires_at > first_expiry
    status = client.status(name)
    assert status["held"] is False and status["body"] == "step 1 done"
    # The next holder reads what the last one left, under a greater fence.
    with client.lock(name) as again:
        assert again.body == "step 1 done" and again.fence > lease.fence


def test_a_held_lock_is_refused_with_the_holder_and_a_wait_gets_it_once_released(
    server: str, name: str
) -> None:
    client = direct(server)
    holder = client.lock(name, ttl="5s").acquire()
    with pytest.raises(fencelock.LockHeld) as held:
        client.lock(name).acquire()
    assert held.value.fence == holder.fence and held.value.retry_after is not None
    threading.Timer(0.5, holder.release).start()
    with client.lock(name, wait="10s") as waiter:
        assert waiter.fence > holder.fence


def test_the_lease_is_kept_across_lost_heartbeat_answers(proxy: Proxy, name: str) -> None:
    client = fencelock.Client(proxy.url, timeout=2)
    with client.lock(name, ttl="1500ms") as lease:
        # Every other heartbeat's answer is lost after the server extended the lease.
        for _ in range(4):
            proxy.fault(Fault("drop_answer", "/heartbeat", times=1))
            time.sleep(0.75)
        assert not lease.lost.is_set()
        assert direct(proxy.url).status(name)["fence"] == lease.fence
    dropped = [s for s in proxy.requests("/heartbeat") if s.fault == "drop_answer"]
    assert len(dropped) >= 3, proxy.requests("/heartbeat")


def test_loss_is_declared_before_the_server_lease_ends_when_the_server_cannot_be_reached(
    server: str, proxy: Proxy, name: str
) -> None:
    client = fencelock.Client(proxy.url, timeout=1)
    lost_at: list[dt.datetime] = []
    lease = client.lock(
        name, ttl="1500ms", on_lost=lambda _: lost_at.append(dt.datetime.now(dt.timezone.utc))
    ).acquire()
    time.sleep(0.2)
    proxy.fault(Fault("refuse"))
    assert lease.lost.wait(5), "loss was never declared"
    with pytest.raises(fencelock.LockLost):
        lease.check()
    proxy.fault(None)
    status = direct(server).status(name)
    server_end = dt.datetime.fromisoformat(status["expireTime"].replace("Z", "+00:00"))
    assert lost_at and lost_at[0] < server_end, (lost_at, server_end)
    with pytest.raises(fencelock.LockLost):
        lease.__exit__(None, None, None)


def test_a_holder_that_lost_the_lock_to_another_raises_on_check_and_on_exit(
    server: str, name: str
) -> None:
    client = direct(server)
    with pytest.raises(fencelock.LockLost) as raised, client.lock(name, ttl="900ms") as lease:
        # Another acquire with the holder's nonce takes the lock under a new fence.
        usurper = client.lock(name, nonce=lease.nonce).acquire()
        assert lease.lost.wait(3)
        with pytest.raises(fencelock.LockLost):
            lease.check()
        with pytest.raises(fencelock.LockLost):
            lease.update("late write")
    assert raised.value.code == "lost"
    assert client.status(name)["fence"] == usurper.fence
    assert client.status(name)["body"] == ""
    usurper.release()


def test_after_a_real_expiry_and_a_takeover_the_old_holder_raises(
    server: str, proxy: Proxy, name: str
) -> None:
    client = fencelock.Client(proxy.url, timeout=1)
    lease = client.lock(name, ttl="600ms").acquire()
    # The heartbeats never arrive; the lease runs out on the server and another takes it.
    proxy.fault(Fault("drop_request", "/heartbeat"))
    with direct(server).lock(name, wait="5s") as other:
        assert other.fence > lease.fence
        assert lease.lost.is_set()
        with pytest.raises(fencelock.LockLost):
            lease.check()
    lease.release()


def test_nothing_is_sent_about_a_holding_after_its_block(proxy: Proxy, name: str) -> None:
    client = fencelock.Client(proxy.url, timeout=2)
    with client.lock(name, ttl="1s"):
        time.sleep(1.2)
    left = time.monotonic()
    time.sleep(1.0)
    after = proxy.requests(name, since=left)
    assert after == [], after
    assert [s.method for s in proxy.requests(name)][-1] == "DELETE"


def test_the_block_exception_propagates_and_a_failing_release_does_not_mask_it(
    proxy: Proxy, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = fencelock.Client(proxy.url, timeout=1)
    with pytest.raises(ValueError, match="the job failed"), client.lock(name):
        proxy.fault(Fault("unavailable", "DELETE"))
        raise ValueError("the job failed")
    assert "could not release" in caplog.text
    # The lock was not released; it ends with its lease.
    proxy.fault(None)
    assert direct(proxy.url).status(name)["held"] is True


def test_heartbeats_failing_for_a_third_of_the_lease_signal_danger(proxy: Proxy, name: str) -> None:
    client = fencelock.Client(proxy.url, timeout=0.5)
    warned = threading.Event()
    with client.lock(name, ttl="3s", on_danger=lambda _: warned.set()) as lease:
        proxy.fault(Fault("unavailable", "/heartbeat"))
        assert lease.in_danger.wait(4) and warned.is_set()
        assert not lease.lost.is_set()
        proxy.fault(None)
        # The next heartbeat succeeds and the danger is over.
        deadline = time.monotonic() + 3
        while lease.in_danger.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not lease.in_danger.is_set() and not lease.lost.is_set()


def test_an_acquire_whose_answer_is_lost_is_retried_and_takes_one_holding(
    proxy: Proxy, name: str
) -> None:
    client = fencelock.Client(proxy.url, timeout=1)
    proxy.fault(Fault("drop_answer", "POST /semaphores/", times=1))
    with client.semaphore(name, 2, wait="5s") as slot:
        view = direct(proxy.url)._send(fencelock._protocol.Call("GET", f"/semaphores/{name}"))
        assert [h["fence"] for h in view["holders"]] == [slot.fence], view
    acquires = proxy.requests(f"POST /semaphores/{name}")
    assert len(acquires) == 2 and acquires[0].fault == "drop_answer"


def test_an_unavailable_server_is_retried_within_the_wait(proxy: Proxy, name: str) -> None:
    client = fencelock.Client(proxy.url, timeout=1)
    proxy.fault(Fault("unavailable", f"POST /locks/{name}", times=2))
    with client.lock(name, wait="10s") as lease:
        assert lease.fence > 0
    assert len(proxy.requests(f"POST /locks/{name}")) == 3
    proxy.fault(Fault("unavailable", f"POST /locks/{name}"))
    with pytest.raises(fencelock.Unavailable):
        client.lock(name).acquire()


def test_a_lock_group_and_a_semaphore_are_held_the_same_way(server: str, name: str) -> None:
    client = direct(server)
    names = [f"{name}-a", f"{name}-b"]
    with client.locks(names, ttl="1s") as group:
        assert set(group.fences) == set(names)
        with pytest.raises(TypeError):
            _ = group.fence
        time.sleep(1.5)
        assert not group.lost.is_set()
        with pytest.raises(fencelock.LockHeld):
            client.lock(names[1]).acquire()
    assert all(not client.status(n)["held"] for n in names)
    with client.semaphore(name, 1, ttl="1s") as slot:
        time.sleep(1.5)
        assert not slot.lost.is_set()
        with pytest.raises(fencelock.LockHeld) as full:
            client.semaphore(name, 1).acquire()
        assert full.value.code == "semaphore_full"
        with pytest.raises(TypeError):
            slot.update("no body")


def test_a_decorated_function_runs_under_the_lock(server: str, name: str) -> None:
    client = direct(server)

    @client.locked(name, ttl="5s")
    def job() -> bool:
        held: bool = client.status(name)["held"]
        return held

    assert job() is True
    assert client.status(name)["held"] is False


def test_the_nonce_is_never_logged(
    proxy: Proxy, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = fencelock.Client(proxy.url, timeout=1)
    with client.lock(name, ttl="1500ms") as lease:
        proxy.fault(Fault("unavailable", "/heartbeat", times=2))
        time.sleep(1.0)
        nonce = lease.nonce
    assert nonce not in caplog.text
    assert "heartbeat" in caplog.text  # the failures were logged, without it


def test_typed_errors_carry_the_server_sentence(server: str) -> None:
    client = direct(server)
    with pytest.raises(fencelock.InvalidRequest) as bad:
        client.lock("not a name").acquire()
    assert bad.value.code == "invalid_request" and "lock name" in str(bad.value)
    with pytest.raises(fencelock.Unavailable):
        fencelock.Client("http://127.0.0.1:9", timeout=0.5).lock("x").acquire()


def test_one_request_per_operation_on_one_reused_connection(server: str, name: str) -> None:
    pipe = Pipe(upstream_port=int(server.rsplit(":", 1)[1]))
    pipe.start()
    client = fencelock.Client(pipe.url, timeout=5)
    with client.lock(name, ttl="900ms") as lease:
        time.sleep(1.0)  # three heartbeats, a third of the lease apart
        lease.update("done")
    client.close()
    # The acquire, the heartbeats, the update and the release: one request each.
    heartbeats = pipe.requests - 3
    assert 2 <= heartbeats <= 4, pipe.requests
    assert pipe.connections <= 2, pipe.connections  # the heartbeat thread may overlap


def test_a_grant_whose_answer_came_late_is_confirmed_before_it_is_handed_over(
    proxy: Proxy, name: str
) -> None:
    client = fencelock.Client(proxy.url, timeout=5)
    # The acquire's request reaches the server 0.8 s late: of a 1 s lease, counted
    # from its sending, less than a third is left when the answer comes.
    proxy.fault(Fault("delay", f"POST /locks/{name}$", times=1, seconds=0.8))
    with client.lock(name, ttl="1s") as lease:
        assert lease._clock is not None
        left = lease._clock.deadline - time.monotonic()
        assert not lease.lost.is_set()
    # Handed over with the lease a heartbeat confirmed, not the 0.2 s the acquire left.
    assert left > 0.6, left
    assert proxy.requests(name)[1].path.endswith("/heartbeat"), proxy.requests(name)


def test_an_operators_ask_to_release_is_seen_and_check_raises_it(server: str, name: str) -> None:
    client = direct(server)
    with pytest.raises(fencelock.ReleaseRequested), client.lock(name, ttl="600ms") as lease:
        assert not lease.release_requested.is_set()
        lease.check()
        httpx.post(f"{server}/admin/locks/{name}/ask-release").raise_for_status()
        assert lease.release_requested.wait(5), "the ask was never seen"
        assert not lease.lost.is_set()
        lease.check()
    # Leaving the block released the lock: the holder gave it up itself.
    status = client.status(name)
    assert status["held"] is False and status["expireTime"] is None
    assert "forceReleasedTime" not in status


def test_a_disabled_lock_is_refused_at_once_though_the_caller_would_wait(
    server: str, proxy: Proxy, name: str
) -> None:
    reason = {"reason": "restore from backup"}
    httpx.post(f"{server}/admin/locks/{name}/disable", json=reason).raise_for_status()
    client = fencelock.Client(proxy.url, timeout=5)
    with pytest.raises(fencelock.LockDisabled, match="restore from backup"):
        client.lock(name, wait="30s").acquire()
    # Asked once: waiting would not change the answer.
    assert [seen.method for seen in proxy.seen] == ["POST"]


def test_a_lease_says_when_it_took_over_from_a_holder_whose_lease_ran_out(
    server: str, name: str
) -> None:
    client = direct(server)
    crashed = client.lock(name, ttl="300ms").acquire()
    crashed.update("step 2 of 4")
    crashed._stop.set()  # The holder dies: no more heartbeats, no release.
    with client.lock(name, wait="5s") as lease:
        assert lease.took_over is not None, "the predecessor's lease ran out unreleased"
        assert lease.took_over["fence"] == crashed.fence and lease.fence > crashed.fence
        assert lease.body == "step 2 of 4"
    with client.lock(name) as after_release:
        assert after_release.took_over is None
