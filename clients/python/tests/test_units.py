"""The parts that need no server: durations, the lease's clock, errors by code."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

import fencelock
from fencelock._errors import error_from
from fencelock._protocol import Clock, acquire_chunk, fresh_nonce, seconds, wire


def test_durations_read_as_the_server_writes_them() -> None:
    assert seconds("2m") == 120 and seconds("1500ms") == 1.5 and seconds("30s") == 30
    assert seconds(45) == 45 and seconds(dt.timedelta(minutes=1)) == 60
    assert wire(1.5) == "1500ms"
    for bad in ("soon", "-1s", "1d"):
        with pytest.raises(ValueError):
            seconds(bad)


def test_a_nonce_is_fresh_per_holding_and_fits_the_server() -> None:
    nonces = {fresh_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(1 <= len(n) <= 64 and all("!" <= c <= "~" for c in n) for n in nonces)


def test_the_lease_ends_a_margin_before_one_lease_after_the_last_confirmed_sending() -> None:
    clock = Clock(ttl=3.0, confirmed_sent=100.0)
    # The margin: 1 % of the lease (clocks that tick at different rates) and 10 ms
    # (a timer that wakes late), so that loss is declared before the server's end.
    margin = 0.03 + 0.01
    assert clock.deadline == pytest.approx(103.0 - margin)
    assert clock.next_heartbeat(100.0) == 101.0
    # A confirmation that arrives after a later one does not move the lease back.
    clock.confirm(sent=102.0, ttl=3.0)
    clock.confirm(sent=101.5, ttl=3.0)
    assert clock.deadline == pytest.approx(105.0 - margin)
    # Failing heartbeats are retried every tenth of the lease; danger after a third.
    assert not clock.fail(now=103.0)
    assert clock.next_heartbeat(103.0) == pytest.approx(103.3)
    assert clock.fail(now=104.0)
    assert clock.next_heartbeat(104.9) == clock.deadline  # never past the lease's end


def test_a_wait_is_sent_in_pieces_of_at_most_a_third_of_the_lease() -> None:
    assert acquire_chunk(10.0, 3.0) == 1.0 and acquire_chunk(0.5, 3.0) == 0.5


@pytest.mark.parametrize(
    ("status", "code", "holding", "kind"),
    [
        (409, "lock_held", False, fencelock.LockHeld),
        (409, "semaphore_full", False, fencelock.LockHeld),
        (409, "fence_mismatch", True, fencelock.LockLost),
        (409, "lease_expired", True, fencelock.LockLost),
        (404, "not_found", True, fencelock.LockLost),
        (404, "not_found", False, fencelock.FencelockError),
        (403, "not_holder", True, fencelock.NotHolder),
        (401, "unauthorized", False, fencelock.Unauthorized),
        (403, "forbidden", False, fencelock.Forbidden),
        (429, "too_many_requests", False, fencelock.RateLimited),
        (400, "invalid_request", False, fencelock.InvalidRequest),
        (413, "body_too_large", True, fencelock.InvalidRequest),
        (503, "unavailable", False, fencelock.Unavailable),
        (502, "", False, fencelock.Unavailable),
    ],
)
def test_errors_are_typed_by_the_servers_code(
    status: int, code: str, holding: bool, kind: type[fencelock.FencelockError]
) -> None:
    body = {"error": f"the server's sentence for {code}", "code": code}
    err = error_from(status, body, {"retry-after": "2"}, holding)
    assert type(err) is kind
    assert str(err) == body["error"] and err.status == status
    if isinstance(err, (fencelock.LockHeld, fencelock.RateLimited, fencelock.Unavailable)):
        assert err.retry_after == 2.0


def test_the_core_package_imports_no_psycopg() -> None:
    """The core package keeps its one dependency: psycopg is the extra's, imported only
    by fencelock.postgres."""
    code = "import sys, fencelock; print('psycopg' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert found.stdout.strip() == "False", found.stderr
