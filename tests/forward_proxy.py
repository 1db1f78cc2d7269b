"""A local forward proxy for the tests: HTTP (absolute-form requests, RFC 9112 3.2.2) and SOCKS5 (RFC 1928,
with the username/password method of RFC 1929) on one port, told apart by the first byte (SOCKS5 opens with
0x05). It records what it was asked to reach and with which credentials, then relays the bytes.

Only what httpx2 sends through a proxy to a plain-HTTP target is handled: the fake upstream speaks HTTP,
so no CONNECT tunnel (httpx2 opens one only for https:// targets) is exercised.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProxiedRequest:
    kind: str  # "http" (absolute-form) or "socks5"
    target: str  # the absolute URL, or host:port of a SOCKS5 CONNECT
    credentials: str | None  # "user:password" the client presented, if any


@dataclass
class ForwardProxy:
    requests: list[ProxiedRequest] = field(default_factory=list)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def url(self, scheme: str = "http", credentials: str | None = None) -> str:
        userinfo = f"{credentials}@" if credentials else ""
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}"

    def start(self) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        started = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            server = loop.run_until_complete(asyncio.start_server(self._serve, sock=sock))
            started.set()
            loop.run_forever()
            # Connections still open end here, before the loop closes under them.
            server.close()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="forward proxy", daemon=True)
        self._thread.start()
        started.wait(5)

    def stop(self) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = await reader.readexactly(1)
            if first == b"\x05":
                await self._socks5(reader, writer)
            else:
                await self._http(first, reader, writer)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def _http(self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = first + await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ")
        headers = [line for line in lines if line]
        credentials = None
        kept = []
        for line in headers:
            name, _, value = line.partition(":")
            if name.strip().lower() == "proxy-authorization":
                credentials = base64.b64decode(value.strip().removeprefix("Basic ")).decode()
            elif name.strip().lower() not in ("connection", "proxy-connection"):
                kept.append(line)
        self.requests.append(ProxiedRequest("http", target, credentials))
        _, _, rest = target.partition("://")
        authority, _, path = rest.partition("/")
        host, _, port = authority.rpartition(":")
        # One request per connection, so the next request's line is read (and recorded) here again.
        upstream_head = "\r\n".join([f"{method} /{path} {version}", *kept, "Connection: close", "", ""])
        up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port or 80))
        up_writer.write(upstream_head.encode("latin-1"))
        await relay(reader, writer, up_reader, up_writer)

    async def _socks5(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        methods = await reader.readexactly((await reader.readexactly(1))[0])
        credentials = None
        if 2 in methods:  # username/password (RFC 1929)
            writer.write(b"\x05\x02")
            await reader.readexactly(1)
            user = await reader.readexactly((await reader.readexactly(1))[0])
            password = await reader.readexactly((await reader.readexactly(1))[0])
            credentials = f"{user.decode()}:{password.decode()}"
            writer.write(b"\x01\x00")
        else:
            writer.write(b"\x05\x00")
        _, command, _, address_type = await reader.readexactly(4)
        if address_type == 1:
            host = socket.inet_ntoa(await reader.readexactly(4))
        elif address_type == 3:
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        else:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        port = int.from_bytes(await reader.readexactly(2), "big")
        self.requests.append(ProxiedRequest("socks5", f"{host}:{port}", credentials))
        if command != 1:
            writer.write(b"\x05\x07\x00\x01" + bytes(6))  # command not supported
            return
        up_reader, up_writer = await asyncio.open_connection(host, port)
        writer.write(b"\x05\x00\x00\x01" + bytes(6))
        await relay(reader, writer, up_reader, up_writer)


async def relay(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until the upstream closes."""

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()

    outgoing = asyncio.ensure_future(pipe(reader, up_writer))
    try:
        await pipe(up_reader, writer)
    finally:
        outgoing.cancel()
        up_writer.close()
