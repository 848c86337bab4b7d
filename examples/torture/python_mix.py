"""The torture run's Python mix: clients of the Python package (clients/python) that
take locks through the run's three servers, hold them with the package's own
heartbeats, save bodies, write downstream with their fences while they believe they
hold, and release.

The torture binary starts this with the servers' URLs. Every HTTP call the package
makes is written to stdout as one JSON operation of the run's history (times in
microseconds from the run's start, on the monotonic clock the binary shares), and
every downstream write is asked of the binary: a line ``{"write": name, "fence": f}``
on stdout, answered by ``accepted`` or ``rejected`` on stdin, so that the binary's
store decides it among the Rust clients' writes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import threading
import time
from typing import Any

import fencelock
from fencelock._protocol import Call

#: Client ids of this mix, clear of the Rust clients'.
FIRST_ID = 10_000
#: A write needs this much of the believed lease left, as the Rust clients' do.
MARGIN = 0.15

out = threading.Lock()
answers: dict[int, threading.Event] = {}
verdicts: dict[int, str] = {}
asked = 0


def emit(line: dict[str, Any]) -> None:
    with out:
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()


def read_verdicts() -> None:
    for line in sys.stdin:
        number, verdict = line.split()
        verdicts[int(number)] = verdict
        answers[int(number)].set()


def write_downstream(client: int, name: str, fence: int, ttl_ms: int) -> None:
    global asked
    with out:
        asked += 1
        number = asked
        answers[number] = threading.Event()
    emit({"write": name, "fence": fence, "id": number, "client": client, "ttl_ms": ttl_ms})
    answers[number].wait(10)


def outcome(err: BaseException | None, result: Any) -> str:
    if err is None:
        if isinstance(result, dict) and result.get("released") is False:
            return "not_released"
        return "ok"
    if isinstance(err, fencelock.LockHeld):
        return "held"
    if isinstance(err, fencelock.LockLost):
        return "lost"
    if isinstance(err, fencelock.Unavailable):
        return "unavailable" if err.status else "unreachable"
    return "refused"


def recorded(client: fencelock.Client, id_: int, epoch_us: int) -> None:
    """Makes every call of ``client`` an operation of the history."""
    send = client._send

    def send_recorded(call: Call, timeout: float | None = None) -> Any:
        parts = call.path.strip("/").split("/")
        if parts[0] != "locks" or call.method == "GET":
            return send(call, timeout)
        start = time.monotonic_ns() // 1000 - epoch_us
        result: Any = None
        err: BaseException | None = None
        try:
            result = send(call, timeout)
            return result
        except fencelock.FencelockError as raised:
            err = raised
            raise
        finally:
            end = time.monotonic_ns() // 1000 - epoch_us
            name = parts[1]
            if len(parts) == 2:
                kind, fence = "acquire", (result or {}).get("fence")
                body = (result or {}).get("body") if err is None else None
                ttl = (call.json or {}).get("ttl", "0ms")
            else:
                fence, body = int(parts[2]), None
                kind = {"DELETE": "release"}.get(call.method, "heartbeat")
                if len(parts) == 3 and call.method == "POST":
                    kind, body = "update", (call.content or b"").decode()
                ttl = None
            emit(
                {
                    "client": id_,
                    "kind": kind,
                    "name": name,
                    "fence": fence,
                    "start": start,
                    "end": end,
                    "outcome": outcome(err, result),
                    "ttl_ms": int(ttl.removesuffix("ms")) if ttl else ttl_of.get(id_, 0),
                    "body": body,
                    "seq": None,
                }
            )

    client._send = send_recorded  # type: ignore[method-assign]


ttl_of: dict[int, int] = {}


def holder(
    id_: int, urls: list[str], names: list[str], until: float, seed: int, epoch: int
) -> None:
    rng = random.Random(seed)
    clients = []
    for url in urls:
        client = fencelock.Client(url, timeout=3)
        recorded(client, id_, epoch)
        clients.append(client)
    step = 0
    while time.monotonic() < until:
        name = rng.choice(names)
        ttl_ms = rng.randrange(1000, 3001)
        ttl_of[id_] = ttl_ms
        wait = rng.choice([0.0, rng.uniform(0.1, 2.0)])
        lease = rng.choice(clients).lock(name, ttl=f"{ttl_ms}ms", wait=wait)
        try:
            lease.acquire()
        except fencelock.FencelockError:
            time.sleep(rng.uniform(0.05, 0.3))
            continue
        hold_until = time.monotonic() + rng.uniform(0.3, 3.0)
        while time.monotonic() < min(hold_until, until) and not lease.lost.is_set():
            clock = lease._clock
            if clock is not None and clock.deadline - time.monotonic() > MARGIN:
                write_downstream(id_, name, lease.fence, ttl_ms)
            if rng.random() < 0.3:
                step += 1
                with contextlib.suppress(fencelock.FencelockError):
                    lease.update(f"py{id_}-f{lease.fence}-{step}")
            time.sleep(ttl_ms / 4000)
        lease.release()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--urls", required=True)
    parser.add_argument("--names", required=True)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epoch-us", type=int, required=True)
    args = parser.parse_args()
    threading.Thread(target=read_verdicts, daemon=True).start()
    until = time.monotonic() + args.seconds
    threads = [
        threading.Thread(
            target=holder,
            args=(
                FIRST_ID + i,
                args.urls.split(","),
                args.names.split(","),
                until,
                args.seed * 1000 + i,
                args.epoch_us,
            ),
        )
        for i in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
