"""A TCP proxy of the fault suite's own, between the processes and each server they use.

One :class:`ProxyHub` runs every proxy on an asyncio loop in a thread of its own, so the (synchronous) test
drives the faults with plain method calls. A :class:`TcpProxy` listens on a loopback port and forwards each
connection to one of its upstreams, round-robin (two upstreams: a balancer in front of two API replicas; a
refused upstream is skipped, as a load balancer's health check would), and can:

- add **latency** to every chunk, in both directions (order kept);
- **reset** every open connection (RST, not FIN: what a client sees of a server that died);
- **refuse**: reset the open connections and every new one until healed (a server restarting);
- **blackhole**: keep the connections open but carry no byte, and hold new ones unanswered, until healed
  (a network partition; TCP keeps what was sent and delivers it after the heal);
- **heal**: back to forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
Mode = Literal["pass", "refuse", "blackhole"]
CHUNK = 64 * 1024


def _hard_close(writer: asyncio.StreamWriter) -> None:
    """Close with a RST: SO_LINGER 0, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    """One listening port forwarding to ``upstreams`` (round-robin), with faults on demand."""

    def __init__(self, name: str, upstreams: list[tuple[str, int]]) -> None:
        self.name = name
        self.upstreams = upstreams
        self.port = 0
        self.mode: Mode = "pass"
        self.latency = 0.0
        self.connections = 0
        self._turn = itertools.count()
        self._open: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.reset_all()
        self._flowing.set()

    def reset_all(self) -> int:
        """RST every open connection (both sides); how many sockets were reset."""
        writers = list(self._open)
        for writer in writers:
            _hard_close(writer)
        self._open.clear()
        return len(writers)

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "pass":
            self._flowing.set()
        else:
            self._flowing.clear()
        if mode == "refuse":
            self.reset_all()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "refuse":
            _hard_close(writer)
            return
        self._open.add(writer)
        await self._flowing.wait()  # a blackholed new connection waits, unanswered, for the heal
        if self.mode == "refuse" or writer.is_closing():
            _hard_close(writer)
            return
        upstream = await self._connect()
        if upstream is None:
            self._open.discard(writer)
            _hard_close(writer)
            return
        up_reader, up_writer = upstream
        self._open.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            self._open.discard(w)
            with contextlib.suppress(Exception):
                w.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        start = next(self._turn)
        for i in range(len(self.upstreams)):
            host, port = self.upstreams[(start + i) % len(self.upstreams)]
            with contextlib.suppress(OSError):
                return await asyncio.wait_for(asyncio.open_connection(host, port), timeout=5)
        return None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if self.latency:
                    await asyncio.sleep(self.latency)
                await self._flowing.wait()  # blackholed: the bytes wait here, as in a partitioned network
                if writer.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # The peer finished or vanished: pass the end on (a reset stays a reset: the other pipe sees it).
            with contextlib.suppress(Exception):
                if writer.can_write_eof() and not writer.is_closing():
                    writer.write_eof()


class ProxyHub:
    """Every proxy of a topology, on one asyncio loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.proxies: dict[str, TcpProxy] = {}
        self._thread = threading.Thread(target=self.loop.run_forever, name="fault-proxies", daemon=True)
        self._thread.start()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def add(self, name: str, upstreams: list[tuple[str, int]]) -> TcpProxy:
        """Start a proxy to ``upstreams``; its port is ``.port``."""

        async def make() -> TcpProxy:
            proxy = TcpProxy(name, upstreams)
            await proxy.start()
            return proxy

        proxy = self._call(make())
        self.proxies[name] = proxy
        return proxy

    def _on(self, names: list[str] | None, action: str, *args: Any) -> int:
        async def run() -> int:
            done = 0
            for name in names or list(self.proxies):
                result = getattr(self.proxies[name], action)(*args)
                done += result if isinstance(result, int) else 0
            return done

        return self._call(run())

    def reset(self, names: list[str] | None = None) -> int:
        """RST every open connection of these proxies (all by default); how many sockets."""
        return self._on(names, "reset_all")

    def refuse(self, names: list[str] | None = None) -> None:
        """Reset every connection and refuse new ones until :meth:`heal`: a server restarting."""
        self._on(names, "set_mode", "refuse")

    def blackhole(self, names: list[str] | None = None) -> None:
        """Carry no byte on old or new connections until :meth:`heal`: a partition."""
        self._on(names, "set_mode", "blackhole")

    def heal(self, names: list[str] | None = None) -> None:
        """Forward again, with no latency."""
        self._on(names, "set_mode", "pass")
        self.set_latency(0.0, names)

    def set_latency(self, seconds: float, names: list[str] | None = None) -> None:
        """Delay every chunk by ``seconds`` in each direction."""

        async def run() -> None:
            for name in names or list(self.proxies):
                self.proxies[name].latency = seconds

        self._call(run())

    def close(self) -> None:
        async def run() -> None:
            for proxy in self.proxies.values():
                await proxy.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self._call(run())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()
