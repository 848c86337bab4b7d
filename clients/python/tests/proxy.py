"""A fault proxy between a client and a fencelock server, for the faults a real
server cannot be made to produce on cue: an answer lost after the request was
served, a request that never arrives, a 503, a refused connection, a delay.

It speaks just enough HTTP/1.1: one request per connection to the server (sent with
``Connection: close``), and it closes the client's connection after each answer, so
every request is seen whole and counted.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def serve_in_thread(handler: Handler) -> int:
    """Serves `handler` on a free port of 127.0.0.1 from an event loop of its own, in a
    daemon thread; answers the port."""
    ready = threading.Event()
    port: list[int] = []

    async def serve() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        async with server:
            await server.serve_forever()

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True).start()
    ready.wait(10)
    return port[0]


@dataclass
class Fault:
    """What happens to the requests whose ``METHOD path`` matches ``match``.

    ``kind`` is ``drop_answer`` (served, the answer never reaches the client),
    ``drop_request`` (never served; the client sees its connection close),
    ``unavailable`` (answered 503 here), ``refuse`` (the connection is closed on
    arrival) or ``delay`` (served ``seconds`` late). ``times`` limits how many
    requests it hits; ``None`` means all of them.
    """

    kind: str
    match: str = ""
    times: int | None = None
    seconds: float = 0.0

    def hits(self, request_line: str) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        return re.search(self.match, request_line) is not None


@dataclass
class Seen:
    method: str
    path: str
    at: float
    fault: str = ""


@dataclass
class Proxy:
    upstream_port: int
    port: int = 0
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fault(self, fault: Fault | None) -> None:
        """Replaces the faults with ``fault`` (none when ``None``)."""
        with self._lock:
            self.faults = [fault] if fault else []

    def requests(self, match: str = "", since: float = 0.0) -> list[Seen]:
        with self._lock:
            return [
                s for s in self.seen if s.at >= since and re.search(match, f"{s.method} {s.path}")
            ]

    def _pick(self, line: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.hits(line):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def start(self) -> None:
        self.port = serve_in_thread(self._client)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        length = 0
        kept = [lines[0]]
        for line in lines[1:]:
            if not line:
                continue
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-length":
                length = int(value.strip())
            if key.strip().lower() != "connection":
                kept.append(line)
        body = await reader.readexactly(length) if length else b""
        fault = self._pick(f"{method} {path}")
        with self._lock:
            self.seen.append(Seen(method, path, time.monotonic(), fault.kind if fault else ""))
        kind = fault.kind if fault else ""
        if kind in ("refuse", "drop_request"):
            return
        if kind == "unavailable":
            text = b'{"error":"the fault proxy answers 503","code":"unavailable"}'
            writer.write(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                b"retry-after: 1\r\nconnection: close\r\ncontent-length: "
                + str(len(text)).encode()
                + b"\r\n\r\n"
                + text
            )
            await writer.drain()
            return
        if kind == "delay" and fault is not None:
            await asyncio.sleep(fault.seconds)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        request = "\r\n".join([*kept, "Connection: close", "", ""]).encode("latin-1") + body
        up_writer.write(request)
        await up_writer.drain()
        response = await up_reader.read()
        up_writer.close()
        if kind == "drop_answer":
            return
        writer.write(response)
        await writer.drain()


@dataclass
class Pipe:
    """A plain TCP relay to the server that counts the connections it is asked for
    and the HTTP requests that pass through them, to see that a client reuses its
    connections and sends one request per operation."""

    upstream_port: int
    port: int = 0
    connections: int = 0
    requests: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = serve_in_thread(self._client)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, count: bool
        ) -> None:
            try:
                while data := await source.read(65536):
                    if count:
                        self.requests += len(re.findall(rb" HTTP/1\.1\r\n", data))
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))
