"""
The suite's QUIC peer (aioquic on asyncio): the optional column beside
MNET and Twisted TCP.  The same jobs and JSON lines as the other peers:

    python bench/_quic_peer.py receive --port 0 --bytes N   # bulk sink
    python bench/_quic_peer.py send --port P --bytes N      # bulk source
    python bench/_quic_peer.py server --port 0              # echo server
    python bench/_quic_peer.py echo --port P --count N      # 64-byte echo

Each run makes a throw-away self-signed certificate; the client does not
verify it (both ends are on loopback, and the bench measures transport,
not PKI).  One bidirectional stream per connection carries the data.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import hashlib
import json
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from _netns_peer import stream_chunks
from aioquic.asyncio import connect, serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamDataReceived

ALPN = ["mnet-bench"]
MESSAGE_SIZE = 64


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def _server_configuration(directory: Path) -> QuicConfiguration:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    configuration = QuicConfiguration(is_client=False, alpn_protocols=ALPN)
    configuration.load_cert_chain(str(cert_path), str(key_path))
    return configuration


def _client_configuration() -> QuicConfiguration:
    return QuicConfiguration(is_client=True, alpn_protocols=ALPN, verify_mode=ssl.CERT_NONE)


class EchoServer(QuicConnectionProtocol):
    def quic_event_received(self, event: Any) -> None:
        if isinstance(event, StreamDataReceived):
            self._quic.send_stream_data(event.stream_id, event.data, end_stream=event.end_stream)
            self.transmit()


class Sink(QuicConnectionProtocol):
    """Reads one stream to its end; reports what arrived, as the bulk receivers do."""

    expected = 0
    #: Set once the stream ended and the answer left: the receive job is over.
    finished: asyncio.Event | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.digest = hashlib.sha256()
        self.received = 0
        self.connected = time.monotonic()

    def quic_event_received(self, event: Any) -> None:
        if not isinstance(event, StreamDataReceived):
            return
        self.digest.update(event.data)
        self.received += len(event.data)
        if event.end_stream:
            emit(
                event="result",
                bytes=self.received,
                sha256=self.digest.hexdigest(),
                complete=self.received == self.expected,
                connected=self.connected,
                last_byte=time.monotonic(),
            )
            # Tell the sender everything arrived, so that it can go.
            self._quic.send_stream_data(event.stream_id, b"done", end_stream=True)
            self.transmit()
            if self.finished is not None:
                asyncio.get_running_loop().call_later(0.2, self.finished.set)


async def listen(options: argparse.Namespace, protocol: type[QuicConnectionProtocol]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        configuration = _server_configuration(Path(directory))
        server = await serve(
            options.host, options.port, configuration=configuration, create_protocol=protocol
        )
        emit(event="listening", port=server._transport.get_extra_info("sockname")[1])
        finished = asyncio.Event()
        if protocol is Sink:
            Sink.finished = finished
        with contextlib.suppress(asyncio.TimeoutError):  # the echo server: until killed
            await asyncio.wait_for(finished.wait(), options.timeout)
        server.close()


@contextlib.asynccontextmanager
async def _stream(
    options: argparse.Namespace,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """One connection to the server and one bidirectional stream on it."""
    configuration = _client_configuration()
    async with connect(options.host, options.port, configuration=configuration) as client:
        yield await client.create_stream()


async def send(options: argparse.Namespace) -> None:
    async with _stream(options) as (reader, writer):
        first_write = time.monotonic()
        for chunk in stream_chunks(options.bytes):
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        await asyncio.wait_for(reader.read(), options.timeout)
    emit(event="result", first_write=first_write)


async def echo(options: argparse.Namespace) -> None:
    async with _stream(options) as (reader, writer):
        digest = hashlib.sha256()
        times = []
        for index in range(options.count):
            message = index.to_bytes(8, "big") * (MESSAGE_SIZE // 8)
            started = time.perf_counter()
            writer.write(message)
            reply = await reader.readexactly(MESSAGE_SIZE)
            times.append(time.perf_counter() - started)
            if reply != message:
                raise AssertionError(f"echo {index} came back different")
            digest.update(reply)
    emit(event="result", times=times, sha256=digest.hexdigest())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["receive", "send", "server", "echo"])
    parser.add_argument("--proto", default="quic", help="accepted for the runners; always QUIC")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bytes", type=int, default=0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=120.0)
    options = parser.parse_args()
    Sink.expected = options.bytes
    jobs = {
        "receive": lambda: listen(options, Sink),
        "server": lambda: listen(options, EchoServer),
        "send": lambda: send(options),
        "echo": lambda: echo(options),
    }
    try:
        asyncio.run(jobs[options.role]())
    except Exception as error:  # reported to the runner, which prints it
        emit(event="error", error=repr(error))
        raise


if __name__ == "__main__":
    sys.exit(main())
