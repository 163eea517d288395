"""Network faults between the services and the broker: a loopback TCP proxy a test switches.

The ``faulty_broker`` fixture starts a Tansu broker that listens on its own port but advertises
the proxy's, so every connection a client opens (bootstrap, and the reconnects that follow the
advertised address) goes through :class:`FaultProxy`; ``make_proxied_settings`` points settings at it.
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from pipeline.errors import CliError
from pipeline.kafka.broker import EmbeddedBroker, broker_binary, free_port
from tests.plugins.broker import SettingsFactory, settings_factory

CHUNK = 65536
#: A Kafka request starts with its size (int32), api_key, api_version (int16 each), correlation id (int32) and
#: the client id's length (int16), the client id following.
REQUEST_HEADER = struct.Struct(">ihhih")
PRODUCE_API_KEY = 0


class RequestScanner:
    """Follows the Kafka requests in one client's byte stream: whether it sent a Produce request, its client id.

    Fed every chunk in order; only the headers are looked at, the rest of each request is skipped by its size.
    """

    def __init__(self) -> None:
        self.client_id: str | None = None
        self.produces = False
        self._head = b""
        self._skip = 0

    def feed(self, data: bytes) -> None:
        while data:
            if self._skip:
                taken = min(self._skip, len(data))
                self._skip -= taken
                data = data[taken:]
                continue
            self._head += data
            data = b""
            if len(self._head) < REQUEST_HEADER.size:
                return
            size, api_key, _version, _correlation, id_size = REQUEST_HEADER.unpack_from(self._head)
            if len(self._head) < REQUEST_HEADER.size + max(id_size, 0):
                return
            if id_size > 0:
                self.client_id = self._head[REQUEST_HEADER.size : REQUEST_HEADER.size + id_size].decode(
                    errors="replace"
                )
            self.produces = self.produces or api_key == PRODUCE_API_KEY
            end = 4 + size
            data, self._skip = self._head[end:], max(0, end - len(self._head))
            self._head = b""


class FaultProxy:
    """Forwards loopback TCP connections on :attr:`port` to ``upstream``; faults apply to every connection.

    ``cut()`` aborts every connection and resets new ones (the broker is unreachable);
    ``blackhole()`` keeps connections open but passes no byte either way until ``heal()``, like a
    network partition: TCP retransmits, so held bytes arrive late rather than leaving a hole in
    the stream; ``delay(ms)`` holds every chunk ``ms`` longer; ``heal()`` ends all faults.
    """

    def __init__(self, upstream: tuple[str, int], port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self._upstream = upstream
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._flowing = asyncio.Event()
        self._cut = False
        self._delay_s = 0.0
        self._stall: str | None = None
        self._stalled_links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        #: Connections forwarded, connections reset because of a cut, chunks held by a blackhole, by a produce stall.
        self.accepted = self.refused = self.held = self.stalled = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._run(self._start())
        return self

    async def _start(self) -> None:
        self._flowing.set()
        self._server = await asyncio.start_server(self._serve, self.host, self.port)

    def cut(self) -> None:
        self._run(self._set(cut=True))

    def blackhole(self) -> None:
        self._run(self._set(flowing=False))

    def delay(self, ms: float) -> None:
        self._run(self._set(delay_s=ms / 1000.0))

    def stall_produce(self, client_id: str = "") -> None:
        self._run(self._set(stall=client_id))

    def heal(self) -> None:
        self._run(self._set())

    async def _set(
        self, cut: bool = False, flowing: bool = True, delay_s: float = 0.0, stall: str | None = None
    ) -> None:
        self._cut, self._delay_s, self._stall = cut, delay_s, stall
        if stall is None:
            for link in list(self._stalled_links):
                _abort(*link)
            self._stalled_links.clear()
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()
        if cut:
            for link in list(self._links):
                _abort(*link)

    def close(self) -> None:
        self._run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            _abort(*link)
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _run(self, coroutine: Any) -> None:
        future: Future[None] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        future.result(5.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            self.refused += 1
            _abort(writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            _abort(writer)
            return
        self.accepted += 1
        link = (writer, upstream_writer)
        self._links.add(link)
        pumps = [
            asyncio.create_task(self._pump(reader, upstream_writer, link)),
            asyncio.create_task(self._pump(upstream_reader, writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass  # the proxy is closing: the connection ends below
        finally:
            self._links.discard(link)
            self._stalled_links.discard(link)
            _abort(*link)
            for pump in pumps:
                pump.cancel()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: tuple[asyncio.StreamWriter, asyncio.StreamWriter] | None = None,
    ) -> None:
        """Copy one direction; chunks keep their order, each sent ``delay`` after it was read.

        ``link``: this is the client's side of that link, whose requests a produce stall looks at.
        """
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer))
        requests = RequestScanner() if link is not None else None
        try:
            while data := await reader.read(CHUNK):
                if requests is not None and link is not None:
                    requests.feed(data)
                    stall = self._stall
                    if stall is not None and requests.produces and (requests.client_id or "").startswith(stall):
                        self.stalled += 1
                        self._stalled_links.add(link)
                        await asyncio.Event().wait()  # until heal() resets the connection
                if not self._flowing.is_set():
                    self.held += 1
                    await self._flowing.wait()
                queue.put_nowait((self._loop.time() + self._delay_s, data))
        except ConnectionError:
            pass
        finally:
            queue.put_nowait((0.0, b""))
            await sender

    async def _send(self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                await asyncio.sleep(max(0.0, due - self._loop.time()))
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            return


def _abort(*writers: asyncio.StreamWriter) -> None:
    """Close at once with a reset, as an unreachable broker looks to the client."""
    for writer in writers:
        writer.transport.abort()


class ProxiedBroker(EmbeddedBroker):
    """Tansu on its own port that advertises ``advertised_port``, so clients reconnect through the proxy there."""

    def __init__(self, advertised_port: int) -> None:
        super().__init__()
        self.advertised_port = advertised_port

    def start(self) -> ProxiedBroker:
        cmd = [
            str(broker_binary()),
            "broker",
            "--listener-url",
            f"tcp://{self.host}:{self.port}",
            "--advertised-listener-url",
            f"tcp://{self.host}:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
        ]
        self._process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_timeout_s
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise CliError(f"proxied broker did not answer on {self.bootstrap_servers}")
            time.sleep(0.02)
        return self


@pytest.fixture(scope="session")
def fault_proxy() -> Iterator[FaultProxy]:
    """A broker reachable only through a :class:`FaultProxy`; healed after every test that uses ``faults``."""
    port = free_port()
    with ProxiedBroker(advertised_port=port) as broker:
        proxy = FaultProxy((broker.host, broker.port), port).start()
        try:
            yield proxy
        finally:
            proxy.close()


@pytest.fixture
def faults(fault_proxy: FaultProxy) -> Iterator[FaultProxy]:
    """The proxy, healed when the test ends whatever it switched."""
    try:
        yield fault_proxy
    finally:
        fault_proxy.heal()


@pytest.fixture(scope="session")
def make_proxied_settings(fault_proxy: FaultProxy) -> SettingsFactory:
    """``make_settings`` for the broker behind the proxy: every client connects through it."""
    return settings_factory(fault_proxy.address)
