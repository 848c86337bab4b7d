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
        # The tests play the operator too (ask-release, disable).
        "FENCELOCK_ALLOW_ADMIN_WITHOUT_AUTH": "true",
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


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """The connection string of a PostgreSQL started here (Debian's ``postgresql``:
    ``initdb`` and ``postgres`` on 127.0.0.1, as the ``postgres`` user when the tests
    run as root), stopped when the tests end. Without PostgreSQL the tests that need
    it fail, unless ``FENCELOCK_POSTGRES_TESTS=skip`` (``make python-test`` sets it
    there, and says so)."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        if os.environ.get("FENCELOCK_POSTGRES_TESTS") == "skip":
            pytest.skip("PostgreSQL is not installed")
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    bin_dir = bins[-1].parent
    as_owner: list[str] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data_dir = _postgres_dir(as_owner)
    initdb = [str(bin_dir / "initdb"), "-A", "trust", "-U", "postgres", "--no-sync"]
    subprocess.run(
        [*as_owner, *initdb, "-D", str(data_dir / "data")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    port = _free_port()
    # The server stops (fast shutdown) when this process's end closes the shell's
    # stdin, however this process ends.
    command = (
        f"{bin_dir / 'postgres'} -D {data_dir / 'data'} -h 127.0.0.1 -p {port} "
        f"-k {data_dir} -F & pid=$!; cat >/dev/null; kill -INT $pid; wait $pid"
    )
    server = subprocess.Popen(
        [*as_owner, "/bin/sh", "-c", command],
        stdin=subprocess.PIPE,
        stdout=open(data_dir / "postgres.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(300):
            if server.poll() is not None:
                raise RuntimeError(f"postgres exited; see {data_dir / 'postgres.log'}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=10"
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(30)


def _postgres_dir(as_owner: list[str]) -> Path:
    """A new folder the server's user can write: under target/, or in the temporary
    directory when that user cannot reach target/ (a home directory of mode 0700)."""
    import shutil
    import tempfile

    candidates = [
        ROOT / "target" / "python-tests" / f"postgres-{os.getpid()}",
        Path(tempfile.gettempdir()) / f"fencelock-python-postgres-{os.getpid()}",
    ]
    for folder in candidates:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        if not as_owner:
            return folder
        shutil.chown(folder, "postgres", "postgres")
        if subprocess.run([*as_owner, "test", "-w", str(folder)], check=False).returncode == 0:
            return folder
    raise RuntimeError("no folder the postgres user can write")
