"""
Stateless replies within their rates: a flood of INITs or of junk with
unknown tags gets a bounded number of answers, in all and per source
network, and the honest connector of another network still gets in.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.protocol import Factory, Protocol

from mnet_twisted import wire
from mnet_twisted.config import ListenerLimits
from mnet_twisted.cookie import CookieMinter
from mnet_twisted.demux import Demultiplexer
from mnet_twisted.ratelimit import ReplyLimiter, TokenBucket, source_network
from mnet_twisted.session import Session

T0 = 1_800_000_000.0


def test_source_networks_are_slash_24_and_slash_64() -> None:
    assert source_network("192.0.2.77") == source_network("192.0.2.1") == "192.0.2"
    assert source_network("192.0.3.1") != source_network("192.0.2.1")
    assert source_network("2001:db8:1:2::5") == source_network("2001:db8:1:2:ffff::1")
    assert source_network("2001:db8:1:3::5") != source_network("2001:db8:1:2::5")
    # An IPv4 peer on a dual-stack socket counts as its IPv4 /24.
    assert source_network("::ffff:192.0.2.9") == "192.0.2"


def test_refilled_network_buckets_are_forgotten_and_limits_hold_after() -> None:
    """``forget_full`` drops just the per-network buckets a new one would equal."""
    limiter = ReplyLimiter(rate=None, per_source_rate=100.0)  # bursts of 10
    assert sum(limiter.allow("192.0.2.1", T0) for _ in range(20)) == 10
    assert sum(limiter.allow("198.51.100.1", T0 + 0.125) for _ in range(3)) == 3
    assert limiter.limited == 10
    # (Times a binary fraction apart: exact at this epoch.)
    limiter.forget_full(T0 + 0.140625)  # the first refilled; the second lacks 1.5 tokens
    assert list(limiter._networks) == ["198.51.100"]
    limiter.forget_full(T0 + 0.25)
    assert limiter._networks == {}
    # Afresh, the same limits: a burst, then refusals, counted on.
    assert sum(limiter.allow("192.0.2.1", T0 + 0.25) for _ in range(20)) == 10
    assert limiter.limited == 20


def test_token_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=100.0, burst=10.0, now=0.0)
    assert sum(bucket.take(0.0) for _ in range(50)) == 10
    assert sum(bucket.take(1.0) for _ in range(500)) == 10  # refilled, up to the burst only
    taken = sum(bucket.take(1.0 + i / 1000) for i in range(1, 1001))
    assert 99 <= taken <= 101  # 100 a second, spread out


def test_limiter_bounds_each_network_and_all_together() -> None:
    limiter = ReplyLimiter(rate=1000.0, per_source_rate=100.0, now=0.0)
    one_network = sum(limiter.allow("198.51.100.7", 0.5 + i / 10_000) for i in range(10_000))
    assert 100 <= one_network <= 100 + 10 + 1  # a second's worth plus the burst
    hosts = [f"10.{i // 256}.{i % 256}.1" for i in range(5000)]
    many = sum(limiter.allow(host, 2.0 + i / 5000) for i, host in enumerate(hosts))
    assert many <= 1000 + 100 + 1


def _demux(**limits: Any) -> Demultiplexer:
    return Demultiplexer(
        local_port=9000,
        cookies=CookieMinter(b"a fixed listener secret"),
        accepting=True,
        random_bytes=random.Random(7).randbytes,
        limits=ListenerLimits(**limits),
    )


def _init_flood(demux: Demultiplexer, sources: list[str], count: int, seconds: float) -> int:
    """``count`` INITs spread over ``seconds`` from ``sources`` in turn; COOKIEs answered."""
    cookies = 0
    for i in range(count):
        tag = i.to_bytes(3, "little")
        demux.receive_datagram(
            wire.Init(tag).to_bytes(), (sources[i % len(sources)], 40000), T0 + i * seconds / count
        )
        cookies += sum(1 for d, _ in demux.datagrams_to_send(T0) if d[0] == wire.PacketType.COOKIE)
    return cookies


def test_an_init_flood_from_one_network_gets_its_share_of_cookies_only() -> None:
    demux = _demux(cookie_rate=5000.0, cookie_rate_per_source=500.0)
    cookies = _init_flood(demux, ["203.0.113.5", "203.0.113.6"], 20_000, 2.0)
    assert 2 * 500 <= cookies <= 2 * 500 + 50 + 1
    # Meanwhile an honest connector elsewhere completes its handshake at once.
    tag = b"\x01\x02\x03"
    demux.receive_datagram(wire.Init(tag).to_bytes(), ("192.0.2.10", 5555), T0 + 2.0)
    (cookie,) = [wire.parse(d) for d, _ in demux.datagrams_to_send(T0 + 2.0)]
    assert isinstance(cookie, wire.Cookie)
    demux.receive_datagram(wire.CookieEcho.of(cookie).to_bytes(), ("192.0.2.10", 5555), T0 + 2.0)
    demux.datagrams_to_send(T0 + 2.0)  # handshakes are taken at the drain
    assert demux.open_sessions == 1


def test_a_spoofed_init_flood_from_everywhere_gets_the_global_rate_only() -> None:
    demux = _demux(cookie_rate=5000.0, cookie_rate_per_source=500.0)
    sources = [f"10.{i // 256}.{i % 256}.1" for i in range(4000)]
    cookies = _init_flood(demux, sources, 20_000, 1.0)
    assert 5000 <= cookies <= 5000 + 500 + 1
    assert demux.replies_limited == 20_000 - cookies


def test_without_limits_every_init_is_answered() -> None:
    demux = _demux(cookie_rate=None, cookie_rate_per_source=None)
    assert _init_flood(demux, ["203.0.113.5"], 3000, 0.1) == 3000


# -- the Twisted side: sessions first within a read batch ------------------------------


class _Sink(Protocol):
    def connectionMade(self) -> None:
        self.received = b""
        self.factory.sinks.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += data


@pytest.mark.internals
@pytest_twisted.ensureDeferred
async def test_a_read_batch_takes_session_traffic_before_strangers_handshakes(
    mnet, monkeypatch
) -> None:
    from mnet_twisted import demux as demux_module

    factory = Factory.forProtocol(_Sink)
    factory.sinks = []
    port = await mnet.listen(factory)
    client = await mnet.connect(port, Factory.forProtocol(Protocol))
    await mnet.waitFor(lambda: factory.sinks)
    listener = port.protocol
    order: list[int] = []
    # What the listener acts on, in order: the session's DATA, strangers' INITs.
    (accepted,) = listener.demux._open
    receive, on_init = Session.receive_datagram, listener.demux._on_init

    def session_spy(self: Session, datagram: bytes, now: float) -> None:
        if self is accepted:
            order.append(datagram[0])
        receive(self, datagram, now)

    def init_spy(datagram: bytes, address: Any, now: float) -> None:
        order.append(datagram[0])
        on_init(datagram, address, now)

    monkeypatch.setattr(Session, "receive_datagram", session_spy)  # slotted: on the class
    monkeypatch.setattr(listener.demux, "_on_init", init_spy)
    monkeypatch.setattr(demux_module, "HANDSHAKES_PER_DRAIN", 5)
    session = client.transport.session
    data = wire.encode_data(session.local_tag, len(b"hello"), 0, b"hello")
    stranger = ("127.0.0.1", 9)
    listener.readBatchStarted()
    for i in range(20):
        listener.datagramReceived(wire.Init(i.to_bytes(3, "big")).to_bytes(), stranger)
    listener.datagramReceived(data, ("127.0.0.1", client.transport.getHost().port))
    listener.readBatchEnded()
    assert order == [wire.PacketType.DATA] + [wire.PacketType.INIT] * 5
    assert listener.demux.handshakes_dropped == 15
    await mnet.waitFor(lambda: factory.sinks[0].received == b"hello")
