"""A real fencelock server on DynamoDB Local for the client's tests, started here as
the Rust suite starts its own: DynamoDB Local from the jar ``make tools`` installs,
the server binary ``cargo build`` makes (``FENCELOCK_BIN`` to use another), each on a
free port of 127.0.0.1, stopped when the tests end. And a fault proxy in front."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from proxy import Proxy

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for(url: str, process: subprocess.Popen[bytes], what: str) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url}")


@pytest.fixture(scope="session")
def server() -> Iterator[str]:
    """The URL of a fencelock server with leases down to 100 ms and a 200 ms skew
    margin, so that tests can let leases run out quickly."""
    logs = ROOT / "target" / "python-tests"
    logs.mkdir(parents=True, exist_ok=True)
    ddb_port, port = _free_port(), _free_port()
    dynamodb = subprocess.Popen(
        [str(ROOT / "scripts" / "dynamodb-local.sh"), str(ddb_port)],
        stdout=open(logs / "dynamodb-local.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    binary = os.environ.get("FENCELOCK_BIN", str(ROOT / "target" / "debug" / "fencelock"))
    env = {
        **os.environ,
        "FENCELOCK_LISTEN": f"127.0.0.1:{port}",
        "FENCELOCK_DYNAMODB_ENDPOINT": f"http://127.0.0.1:{ddb_port}",
        "FENCELOCK_TABLE": f"python-{uuid.uuid4().hex[:8]}",
        "FENCELOCK_CREATE_TABLE": "true",
        "FENCELOCK_MIN_TTL": "100ms",
        "FENCELOCK_CLOCK_SKEW": "200ms",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "RUST_LOG": "warn",
    }
    fencelock = None
    try:
        _wait_for(f"http://127.0.0.1:{ddb_port}", dynamodb, "DynamoDB Local")
        fencelock = subprocess.Popen(
            [binary, "serve"],
            env=env,
            stdout=open(logs / "fencelock.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        _wait_for(f"http://127.0.0.1:{port}/healthz", fencelock, "fencelock")
        # The first requests of a fresh DynamoDB Local are slow (its JIT, the table,
        # the server key); make them here, not in a test with a short lease.
        for i in range(20):
            httpx.post(f"http://127.0.0.1:{port}/locks/warm-up?nonce=w{i}", timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        for process in (fencelock, dynamodb):
            if process is not None:
                process.terminate()
                process.wait(10)


@pytest.fixture
def proxy(server: str) -> Proxy:
    """A fault proxy in front of the server, with no fault yet."""
    proxy = Proxy(upstream_port=int(server.rsplit(":", 1)[1]))
    proxy.start()
    return proxy


@pytest.fixture
def name() -> str:
    """A lock name no other test uses."""
    return f"py:{uuid.uuid4().hex[:12]}"
