"""
A deterministic simulated network for the sans-IO MNET engine.

Every host is a :class:`~mnet_twisted.demux.Demultiplexer` at a made-up
address; datagrams travel over simulated links with seed-chosen loss,
duplication, reordering, delay, jitter, an optional bottleneck rate and
corruption.  Time is a float that only :meth:`SimNet.step` advances: it
jumps to the earliest pending delivery or host deadline, so a 10-second
timeout costs a handful of steps, not ten seconds.

Nothing here reads a clock, a socket or the global random source: the same
seed gives the same run, event for event.

Typical use::

    net = SimNet(seed=1, link=Link(loss=0.05))
    client = net.add_host("10.0.0.1", 4000)
    server = net.add_host("10.0.0.2", 5000, accepting=True)
    conn = client.connect(server)
    net.run_until(lambda: conn.established)
    peer = server.only_session()
    client.write(conn, payload)
    net.run_until(lambda: len(peer.received) == len(payload))

Corruption flips bytes in flight.  MNET has no checksum of its own (UDP's
does that job in real life), so a corrupted DATA payload can be delivered as
if it were genuine: use ``corrupt`` only where the test asserts robustness,
never where it compares bytes.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mnet_twisted import wire
from mnet_twisted.config import SessionConfig
from mnet_twisted.errors import SessionClosedError
from mnet_twisted.events import (
    Closed,
    CloseReason,
    DataReceived,
    Established,
    Event,
    SendBufferLow,
)

if TYPE_CHECKING:  # the engine is imported lazily so trace helpers work without it
    from mnet_twisted.demux import Demultiplexer

Address = tuple[str, int]

#: Where the simulated clock starts: a plausible Unix time, because cookie
#: expirations are Unix seconds in 32 bits.
EPOCH = 1_700_000_000.0

#: Chunk size the helper writer hands to ``Session.send`` at a time.
WRITE_CHUNK = 64 * 1024


class SimError(AssertionError):
    """The simulation did not reach what the test waited for, or saw a violation."""


@dataclass(frozen=True)
class Link:
    """Impairments of one direction of a path.  Rates are probabilities per datagram."""

    #: One-way base delay, seconds.
    delay: float = 0.005
    #: Uniform extra delay in [0, jitter).  With ``fifo`` (the default) jitter
    #: never lets a datagram overtake an earlier one on the same link, as on a
    #: real path with queues; without it, jitter reorders freely.
    jitter: float = 0.0
    fifo: bool = True
    loss: float = 0.0
    duplicate: float = 0.0
    #: Probability that a datagram is held back by an extra uniform
    #: [0, reorder_delay) delay, so later datagrams overtake it.
    reorder: float = 0.0
    reorder_delay: float = 0.02
    #: Probability that 1..3 random bytes of the datagram are flipped.
    corrupt: float = 0.0
    #: Bottleneck rate in bytes per second (``None``: infinitely fast).
    rate: float | None = None
    #: With a rate: drop-tail when the queue would hold more than this many
    #: seconds' worth of bytes.
    queue_limit: float = 0.05


@dataclass
class Stats:
    """What the network did to datagrams; ``by_type`` counts what hosts sent."""

    sent: int = 0
    sent_bytes: int = 0
    delivered: int = 0
    lost: int = 0
    filtered: int = 0
    queue_dropped: int = 0
    duplicated: int = 0
    corrupted: int = 0
    reordered: int = 0
    undeliverable: int = 0
    injected: int = 0
    #: Size probes a host's interface refused (too big to send unfragmented).
    refused: int = 0
    by_type: Counter[str] = field(default_factory=Counter)


def packet_name(datagram: bytes) -> str:
    """A short name of the packet type of ``datagram`` (for counters and filters)."""
    if not datagram:
        return "EMPTY"
    try:
        return wire.PacketType(datagram[0]).name
    except ValueError:
        return f"TYPE{datagram[0]}"


class SessionRecord:
    """One session as an application sees it: its events and the bytes it received."""

    def __init__(self, host: Host, session: Any) -> None:
        self.host = host
        self.session = session
        self.events: list[tuple[float, Event]] = []
        self.received = bytearray()
        self.established_at: float | None = None
        self.closed_at: float | None = None
        self.close_reason: CloseReason | None = None
        #: Application behaviour: send every received chunk back.
        self.echo = False
        #: Bytes the helper writer still has to hand to ``Session.send``.
        self.pending = bytearray()
        self.written = 0
        self.close_when_written = False
        self.waiting_for_low = False
        self.send_buffer_low_events = 0
        #: Bytes received while ``pause_reading`` was in force.
        self.received_while_paused = 0
        self.paused = False
        #: Bytes ``send`` refused because the session no longer took writes.
        self.refused = 0

    def __repr__(self) -> str:
        return (
            f"<SessionRecord {self.host.name} state={self.state} "
            f"rx={len(self.received)} written={self.written} pending={len(self.pending)} "
            f"closed={self.close_reason}>"
        )

    @property
    def established(self) -> bool:
        return self.established_at is not None

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    @property
    def state(self) -> Any:
        return self.session.state

    def event_types(self) -> list[type]:
        return [type(e) for _, e in self.events]


class Host:
    """A simulated machine: one demultiplexer plus a small recording application."""

    def __init__(
        self,
        net: SimNet,
        name: str,
        addr: Address,
        demux: Demultiplexer,
        config: SessionConfig,
    ) -> None:
        self.net = net
        self.name = name
        self.addr = addr
        self.demux = demux
        self.config = config
        self.records: dict[int, SessionRecord] = {}
        self.order: list[SessionRecord] = []
        #: Every event, in order: (time, record, event).
        self.log: list[tuple[float, SessionRecord, Event]] = []
        #: The largest UDP payload its interface sends unfragmented (1500-byte
        #: Ethernet MTU less IPv4 and UDP headers); larger size probes are
        #: refused locally, as Linux refuses them with EMSGSIZE.
        self.max_udp_payload = 1472
        #: A stopped host neither receives datagrams nor runs timers, forever.
        self.stopped = False
        #: New sessions (accepted ones) get ``echo`` set to this.
        self.echo_new_sessions = False
        #: Called with each record the first time it is seen.
        self.on_new_session: Callable[[SessionRecord], None] | None = None
        #: Called with (record, event) after the built-in handling.
        self.on_event: Callable[[SessionRecord, Event], None] | None = None
        #: Observers called just before the demultiplexer gets a datagram
        #: (data, source, now) or runs its timers (now).  Hooks here rather
        #: than wrapped demux methods: a compiled Demultiplexer (setup.py)
        #: has no instance attributes to shadow its methods with.
        self.on_datagram: Callable[[bytes, Address, float], None] | None = None
        self.on_timers: Callable[[float], None] | None = None

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.addr} sessions={len(self.demux)}>"

    # -- application-side calls ------------------------------------------

    def connect(self, peer: Host | Address, config: SessionConfig | None = None) -> SessionRecord:
        """Open a session to ``peer``; returns its record (not yet established)."""
        addr = peer.addr if isinstance(peer, Host) else peer
        session = (
            self.demux.connect(addr, self.net.now, config)
            if config
            else self.demux.connect(addr, self.net.now)
        )
        record = self._record(session)
        self.net.flush()
        return record

    def write(self, record: SessionRecord, data: bytes, close: bool = False) -> None:
        """Queue ``data`` for ``record``, honouring ``writable``; optionally close after it."""
        record.pending += data
        record.close_when_written = record.close_when_written or close
        self._pump(record)
        self.net.flush()

    def close(self, record: SessionRecord) -> None:
        record.session.close(self.net.now)
        self.net.flush()

    def abort(self, record: SessionRecord) -> None:
        record.session.abort(self.net.now)
        self.net.flush()

    def pause(self, record: SessionRecord) -> None:
        record.paused = True
        record.session.pause_reading()
        self.net.flush()

    def resume(self, record: SessionRecord) -> None:
        record.paused = False
        record.session.resume_reading()
        self.net.flush()

    def sessions(self) -> list[SessionRecord]:
        return list(self.order)

    def only_session(self) -> SessionRecord:
        """The single session this host has seen (fails if there are zero or several)."""
        if len(self.order) != 1:
            raise SimError(f"{self.name} has {len(self.order)} sessions, expected exactly 1")
        return self.order[0]

    # -- plumbing ---------------------------------------------------------

    def _record(self, session: Any) -> SessionRecord:
        record = self.records.get(id(session))
        if record is None:
            record = SessionRecord(self, session)
            record.echo = self.echo_new_sessions
            self.records[id(session)] = record
            self.order.append(record)
            if self.on_new_session is not None:
                self.on_new_session(record)
        return record

    def _pump(self, record: SessionRecord) -> None:
        """Hand pending bytes to the session, pausing above the high-water mark.

        This is what a well-behaved producer does: write while the send buffer
        is below ``send_buffer_high_water``, then ask for ``SendBufferLow``.
        """
        session = record.session
        if record.closed or not record.established:
            return
        high = self.config.send_buffer_high_water
        bound = 1000  # every loop is bounded: 1000 chunks of 64 KiB is 64 MiB
        while record.pending and session.send_buffer_size < high and bound > 0:
            bound -= 1
            chunk = bytes(record.pending[:WRITE_CHUNK])
            del record.pending[:WRITE_CHUNK]
            try:
                session.send(chunk)
            except SessionClosedError:
                # The peer started a shutdown: no new writes (MNET has no half-close).
                record.refused += len(chunk) + len(record.pending)
                record.pending.clear()
                return
            record.written += len(chunk)
        if record.pending and not record.waiting_for_low:
            record.waiting_for_low = True
            session.notify_when_send_buffer_low()
        if not record.pending and record.close_when_written:
            record.close_when_written = False
            session.close(self.net.now)

    def _handle(self, session: Any, event: Event) -> None:
        now = self.net.now
        record = self._record(session)
        if record.closed:
            raise SimError(f"{self.name}: event {event!r} after Closed on {record!r}")
        record.events.append((now, event))
        self.log.append((now, record, event))
        if isinstance(event, Established):
            if record.established:
                raise SimError(f"{self.name}: second Established on {record!r}")
            record.established_at = now
            self._pump(record)
        elif isinstance(event, DataReceived):
            if not record.established:
                raise SimError(f"{self.name}: DataReceived before Established on {record!r}")
            if not event.data:
                raise SimError(f"{self.name}: empty DataReceived on {record!r}")
            record.received += event.data
            if record.paused:
                record.received_while_paused += len(event.data)
            if record.echo:
                record.pending += event.data
                self._pump(record)
        elif isinstance(event, SendBufferLow):
            record.send_buffer_low_events += 1
            record.waiting_for_low = False
            self._pump(record)
        elif isinstance(event, Closed):
            record.closed_at = now
            record.close_reason = event.reason
        else:  # pragma: no cover - the engine invented a new event type
            raise SimError(f"unknown event {event!r}")
        if self.on_event is not None:
            self.on_event(record, event)

    def drain(self) -> list[tuple[bytes, Address]]:
        """Run the documented drain order; returns the datagrams to put on the wire."""
        now = self.net.now
        out: list[tuple[bytes, Address]] = []
        for _ in range(64):
            self._take_events()
            self._take_datagrams(now, out)
            # As the Twisted adapter: the acks held while the answers were
            # made, acted on now that they are sent; they may leave more.
            if not self.demux.take_held_acks():
                return out
        raise SimError(f"{self.name}: take_held_acks() never settled")  # pragma: no cover

    def _take_events(self) -> None:
        for _ in range(1_000_000):
            item = self.demux.next_event()
            if item is None:
                return
            self._handle(*item)
        raise SimError(f"{self.name}: next_event() never returned None")  # pragma: no cover

    def _take_datagrams(self, now: float, out: list[tuple[bytes, Address]]) -> None:
        # A datagram_to_send(now) may only be produced by input; events the
        # application reacted to above are already folded in.
        for _ in range(64):
            refused = False
            for datagram, address in self.demux.datagrams_to_send(now):
                if len(datagram) > self.max_udp_payload:
                    # What the kernel does with an unfragmentable datagram
                    # larger than the interface MTU: EMSGSIZE at once.
                    self.net.stats.refused += 1
                    self.demux.datagram_refused(datagram, address, now)
                    refused = True
                else:
                    out.append((datagram, address))
            if not refused:
                return


class SimNet:
    """A deterministic network of hosts connected by impaired links."""

    def __init__(
        self,
        seed: int = 0,
        link: Link | None = None,
        *,
        strict: bool = True,
        start: float = EPOCH,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = start
        self.default_link = link or Link()
        self.links: dict[tuple[Address, Address], Link] = {}
        self.hosts: dict[Address, Host] = {}
        self._queue: list[tuple[float, int, Address, Address, bytes]] = []
        self._counter = itertools.count()
        self._link_free_at: dict[tuple[Address, Address], float] = {}
        self._last_arrival: dict[tuple[Address, Address], float] = {}
        #: Per host, the intervals during which arriving datagrams wait (``hold_arrivals``).
        self._holds: dict[Address, list[tuple[float, float]]] = {}
        self.stats = Stats()
        #: Targeted loss: return True to drop this datagram (before link impairments).
        self.drop: Callable[[bytes, Address, Address], bool] | None = None
        #: Every datagram a host sent: (time, src, dst, bytes), if ``trace`` is on.
        self.trace = False
        self.sent_log: list[tuple[float, Address, Address, bytes]] = []
        #: Check every datagram our engine sends parses and respects the size limit.
        self.strict = strict
        self.steps = 0
        #: Consecutive steps at which the clock did not move (a busy loop guard).
        self._stalled_steps = 0
        #: Hosts' timers fire this much after their deadline (a busy reactor).
        self.timer_lag = 0.0
        #: Probability per step and host of an early, spurious handle_timers() call.
        self.spurious_timers = 0.0
        self._flushing = False
        self._flush_again = False
        #: Largest number of DATA datagrams with payload in flight at once, per direction.
        self.max_data_in_flight: Counter[tuple[Address, Address]] = Counter()
        self._data_in_flight: Counter[tuple[Address, Address]] = Counter()

    # -- building ------------------------------------------------------------

    def add_host(
        self,
        ip: str,
        port: int,
        *,
        accepting: bool = False,
        config: SessionConfig | None = None,
        secret: bytes | None = None,
        name: str | None = None,
        cookies: Any = ...,
        random_bytes: Callable[[int], bytes] | None = None,
        limits: Any = None,
    ) -> Host:
        """Create a host at (ip, port).  Listeners (``accepting``) get a fixed-secret minter."""
        from mnet_twisted.cookie import CookieMinter
        from mnet_twisted.demux import Demultiplexer

        addr = (ip, port)
        if addr in self.hosts:
            raise ValueError(f"duplicate host address {addr}")
        config = config or SessionConfig()
        if cookies is ...:
            cookies = CookieMinter(secret or f"secret of {ip}:{port}".encode())
        if random_bytes is None:
            random_bytes = random.Random(f"{self.seed}/{ip}/{port}").randbytes
        demux = Demultiplexer(
            local_port=port,
            cookies=cookies,
            config=config,
            accepting=accepting,
            random_bytes=random_bytes,
            limits=limits,
        )
        host = Host(self, name or f"{ip}:{port}", addr, demux, config)
        self.hosts[addr] = host
        return host

    def set_link(self, src: Host | Address, dst: Host | Address, link: Link) -> None:
        """Use ``link`` for datagrams from ``src`` to ``dst`` (one direction)."""
        self.links[(_addr(src), _addr(dst))] = link

    def set_path(self, a: Host | Address, b: Host | Address, link: Link) -> None:
        """Use ``link`` in both directions between ``a`` and ``b``."""
        self.set_link(a, b, link)
        self.set_link(b, a, link)

    # -- moving datagrams ------------------------------------------------------

    def inject(self, data: bytes, src: Address, dst: Host | Address, delay: float = 0.0) -> None:
        """Put a hand-made datagram on the wire, bypassing links and filters."""
        self.stats.injected += 1
        self._schedule(self.now + delay, src, _addr(dst), bytes(data))

    def hold_arrivals(self, host: Host | Address, start: float, length: float) -> None:
        """Datagrams reaching ``host`` in [start, start + length) wait until its end.

        As when the host's process is descheduled and its socket fills: they
        are then read in the order they came, all at once.  (Its timers still
        fire on time.)
        """
        self._holds.setdefault(_addr(host), []).append((start, start + length))

    def _schedule(self, when: float, src: Address, dst: Address, data: bytes) -> None:
        for start, end in self._holds.get(dst, ()):
            if start <= when < end:
                when = end
        heapq.heappush(self._queue, (when, next(self._counter), src, dst, data))
        if data[:1] == b"\x00" and len(data) > wire.DATA_HEADER_SIZE:
            key = (src, dst)
            self._data_in_flight[key] += 1
            if self._data_in_flight[key] > self.max_data_in_flight[key]:
                self.max_data_in_flight[key] = self._data_in_flight[key]

    def _check_outgoing(self, host: Host, data: bytes, dst: Address) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SimError(f"{host.name} sent a non-bytes datagram {type(data)!r}")
        if not (isinstance(dst, tuple) and len(dst) == 2):
            raise SimError(f"{host.name} sent to a malformed address {dst!r}")
        try:
            packet = wire.parse(bytes(data))
        except wire.MalformedPacket as exc:
            raise SimError(f"{host.name} sent a malformed datagram {bytes(data).hex()}") from exc
        config = host.config
        limit = (
            config.max_probe_datagram_size
            if config.path_mtu_discovery
            else config.max_datagram_size
        )
        if len(data) > limit and not isinstance(packet, wire.Init):
            raise SimError(f"{host.name} sent {len(data)} bytes > its size limit {limit}")

    def _send(self, src: Host, data: bytes, dst: Address) -> None:
        data = bytes(data)
        dst = (dst[0], dst[1])
        if self.strict:
            self._check_outgoing(src, data, dst)
        self.stats.sent += 1
        self.stats.sent_bytes += len(data)
        self.stats.by_type[packet_name(data)] += 1
        if self.trace:
            self.sent_log.append((self.now, src.addr, dst, data))
        if self.drop is not None and self.drop(data, src.addr, dst):
            self.stats.filtered += 1
            return
        link = self.links.get((src.addr, dst), self.default_link)
        rng = self.rng
        if link.loss and rng.random() < link.loss:
            self.stats.lost += 1
            return
        copies = 1
        if link.duplicate and rng.random() < link.duplicate:
            copies = 2
            self.stats.duplicated += 1
        for _ in range(copies):
            payload = data
            if link.corrupt and rng.random() < link.corrupt:
                self.stats.corrupted += 1
                buf = bytearray(payload)
                for _ in range(rng.randint(1, 3)):
                    i = rng.randrange(len(buf))
                    buf[i] ^= rng.randint(1, 255)
                payload = bytes(buf)
            when = self.now
            if link.rate is not None:
                key = (src.addr, dst)
                start = max(self.now, self._link_free_at.get(key, self.now))
                if start - self.now > link.queue_limit:
                    self.stats.queue_dropped += 1
                    continue
                done = start + len(payload) / link.rate
                self._link_free_at[key] = done
                when = done
            when += link.delay
            if link.jitter:
                when += rng.random() * link.jitter
            if link.fifo:
                key = (src.addr, dst)
                when = max(when, self._last_arrival.get(key, when))
                self._last_arrival[key] = when
            if link.reorder and rng.random() < link.reorder:
                self.stats.reordered += 1
                when += rng.random() * link.reorder_delay
            self._schedule(when, src.addr, dst, payload)

    # -- running ---------------------------------------------------------------

    def flush(self) -> None:
        """Drain every host at the current time and put its output on the wire.

        Re-entrant calls (an application hook writing while a host drains)
        are folded into the running flush, which repeats until no host has
        anything more to say.
        """
        if self._flushing:
            self._flush_again = True
            return
        self._flushing = True
        try:
            for _ in range(100):
                self._flush_again = False
                for host in list(self.hosts.values()):
                    if host.stopped:
                        continue
                    out = host.drain()
                    if out:
                        self._flush_again = True
                    for data, dst in out:
                        self._send(host, data, dst)
                if not self._flush_again:
                    return
            raise SimError("hosts kept producing output at one instant for 100 rounds")
        finally:
            self._flushing = False

    def next_time(self) -> float | None:
        """When something next happens: a delivery or a host deadline."""
        times: list[float] = []
        if self._queue:
            times.append(self._queue[0][0])
        for host in self.hosts.values():
            if host.stopped:
                continue
            deadline = host.demux.next_deadline()
            if deadline is not None:
                times.append(deadline + self.timer_lag)
        return min(times) if times else None

    def step(self) -> bool:
        """Advance to the next happening and process it; False if nothing is pending."""
        when = self.next_time()
        if when is None:
            return False
        self.steps += 1
        if when > self.now:
            self.now = when
            self._stalled_steps = 0
        else:
            self._stalled_steps += 1
            if self._stalled_steps > 10_000:
                raise SimError(f"busy loop: 10000 steps without time moving: {self.describe()}")
        now = self.now
        batches: dict[Address, list[tuple[Address, bytes]]] = {}
        while self._queue and self._queue[0][0] <= now:
            _, _, src, dst, data = heapq.heappop(self._queue)
            if data[:1] == b"\x00" and len(data) > wire.DATA_HEADER_SIZE:
                self._data_in_flight[(src, dst)] -= 1
            batches.setdefault(dst, []).append((src, data))
        for addr, host in list(self.hosts.items()):
            if host.stopped:
                continue
            for src, data in batches.pop(addr, ()):
                self.stats.delivered += 1
                if host.on_datagram is not None:
                    host.on_datagram(data, src, now)
                host.demux.receive_datagram(data, src, now)
            deadline = host.demux.next_deadline()
            due = deadline is not None and deadline + self.timer_lag <= now
            spurious = bool(self.spurious_timers) and self.rng.random() < self.spurious_timers
            if due or spurious:
                if host.on_timers is not None:
                    host.on_timers(now)
                host.demux.handle_timers(now)
        for dropped in batches.values():
            self.stats.undeliverable += len(dropped)
        self.flush()
        return True

    def run_until(
        self,
        predicate: Callable[[], bool],
        *,
        max_steps: int = 200_000,
        max_time: float = 120.0,
        what: str = "",
    ) -> float:
        """Step until ``predicate()`` holds; raise :class:`SimError` after the limits.

        ``max_time`` is simulated seconds from now.  Returns the simulated
        time it took.
        """
        start = self.now
        deadline = start + max_time
        for _ in range(max_steps):
            if predicate():
                return self.now - start
            when = self.next_time()
            if when is None:
                raise SimError(
                    f"network idle at t+{self.now - start:.3f}s before {what or predicate}: "
                    f"{self.describe()}"
                )
            if when > deadline:
                self.now = max(self.now, deadline)
                raise SimError(
                    f"not reached within {max_time}s simulated: {what or predicate}: "
                    f"{self.describe()}"
                )
            self.step()
        if predicate():
            return self.now - start
        raise SimError(
            f"not reached within {max_steps} steps: {what or predicate}: {self.describe()}"
        )

    def run_for(self, seconds: float, *, max_steps: int = 200_000) -> None:
        """Process everything due in the next ``seconds`` simulated seconds."""
        end = self.now + seconds
        for _ in range(max_steps):
            when = self.next_time()
            if when is None or when > end:
                self.now = max(self.now, end)
                return
            self.step()
        raise SimError(f"more than {max_steps} steps in {seconds}s: {self.describe()}")

    def run_until_idle(self, *, max_steps: int = 200_000, max_time: float = 120.0) -> float:
        """Step until no delivery and no deadline is pending."""
        start = self.now
        for _ in range(max_steps):
            when = self.next_time()
            if when is None:
                return self.now - start
            if when > start + max_time:
                raise SimError(f"still busy after {max_time}s simulated: {self.describe()}")
            self.step()
        raise SimError(f"still busy after {max_steps} steps: {self.describe()}")

    def describe(self) -> str:
        parts = [f"t={self.now - EPOCH:.3f} steps={self.steps} queued={len(self._queue)}"]
        for host in self.hosts.values():
            parts.append(f"{host.name}: {host.order!r} deadline={host.demux.next_deadline()}")
        parts.append(repr(self.stats))
        return "; ".join(parts)


def _addr(x: Host | Address) -> Address:
    return x.addr if isinstance(x, Host) else x


# -- targeted loss helpers ----------------------------------------------------


def drop_packets(
    kind: str,
    nth: Iterable[int] = (1,),
    *,
    src: Host | Address | None = None,
) -> Callable[[bytes, Address, Address], bool]:
    """A ``drop`` filter losing the given occurrences (1-based) of a packet type.

    ``kind`` is a :class:`wire.PacketType` name such as ``"COOKIE_ECHO"``.
    """
    wanted = set(nth)
    seen = Counter[str]()
    source = _addr(src) if src is not None else None

    def drop(data: bytes, from_: Address, to: Address) -> bool:
        if packet_name(data) != kind or (source is not None and from_ != source):
            return False
        seen[kind] += 1
        return seen[kind] in wanted

    return drop


def drop_all(
    kind: str, *, src: Host | Address | None = None
) -> Callable[[bytes, Address, Address], bool]:
    """A ``drop`` filter losing every packet of a type (optionally from one sender)."""
    source = _addr(src) if src is not None else None

    def drop(data: bytes, from_: Address, to: Address) -> bool:
        return packet_name(data) == kind and (source is None or from_ == source)

    return drop


def any_of(
    *filters: Callable[[bytes, Address, Address], bool],
) -> Callable[[bytes, Address, Address], bool]:
    """Combine ``drop`` filters: a datagram is dropped if any filter drops it (all are run)."""

    def drop(data: bytes, src: Address, dst: Address) -> bool:
        results = [f(data, src, dst) for f in filters]
        return any(results)

    return drop


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic incompressible test bytes."""
    return random.Random(f"payload/{seed}/{size}").randbytes(size)


def pair(
    seed: int = 0,
    link: Link | None = None,
    *,
    config: SessionConfig | None = None,
    server_config: SessionConfig | None = None,
) -> tuple[SimNet, Host, Host]:
    """A network with a connector host and a listening host, not yet connected."""
    net = SimNet(seed=seed, link=link)
    client = net.add_host("10.0.0.1", 4000, config=config, name="client")
    server = net.add_host(
        "10.0.0.2", 5000, accepting=True, config=server_config or config, name="server"
    )
    return net, client, server


def connected_pair(
    seed: int = 0,
    link: Link | None = None,
    *,
    config: SessionConfig | None = None,
    server_config: SessionConfig | None = None,
    max_time: float = 60.0,
) -> tuple[SimNet, Host, Host, SessionRecord, SessionRecord]:
    """A connector and a listener with one established session between them."""
    net, client, server = pair(seed, link, config=config, server_config=server_config)
    conn = client.connect(server)
    net.run_until(
        lambda: conn.established and bool(server.order) and server.order[0].established,
        max_time=max_time,
        what="handshake",
    )
    return net, client, server, conn, server.only_session()


def echo_round(
    seed: int, link: Link, config: SessionConfig, size: int = 40_000, max_time: float = 120.0
) -> tuple[SimNet, SessionRecord, Host]:
    """A connector sends ``size`` bytes to an echo listener once established
    and closes once all came back; runs until the connector's session ends.

    Returns the network, the connector's record and the listening host.
    """
    net, client, server = pair(seed=seed, link=link, config=config)
    server.echo_new_sessions = True
    message = payload(size, seed=seed)

    def on_event(record: SessionRecord, event: Event) -> None:
        if isinstance(event, Established):
            record.session.send(message)
        elif isinstance(event, DataReceived) and len(record.received) == size:
            record.session.close(net.now)

    client.on_event = on_event
    conn = client.connect(server)
    net.run_until(lambda: conn.closed, max_time=max_time, what="the connector's end")
    return net, conn, server


# -- the reference trace ---------------------------------------------------------

#: A verbatim copy of ``shared/conformance/reference-trace.txt`` (a session
#: between two reference peers, and a reference listener's answers to
#: hand-made datagrams), kept here so the suite runs from a bare checkout.
REFERENCE_TRACE = """\
# One complete MNET v1 session between two reference peers, captured on loopback.
# The connector sends 1200 bytes; the listener echoes them back; the connector closes.
# Columns: seconds since first packet, direction (C = connector, S = listener), datagram as hex.
# Connector tag: ba969d.  Listener tag: 4b01fa.  All integers little-endian.
0.000000 C->S 014d4e455401ba969d
0.000160 S->C 024b01faba969d013e92046bc89fa1e1a6e3560bc7cee5c191d858215cd58eee
0.000598 C->S 034b01faba969d013e92046bc89fa1e1a6e3560bc7cee5c191d858215cd58eee
0.000697 S->C 044b01fa
0.000856 C->S 00ba969df201000000000000f201871d91ce1ca80af3a0c0581d99048ad75ecd565ca740c0864e80506f0e1112a9188d903493810de640c76ef5c7a60d3579e63e092ba53b9e7023e8011691e9d02c5a23593cf1135eea0a12dd8b9b3311a1f374693796b01b145347ca040f12ccc29abe72ef3db85cc9792cfb60adf271c48b622d75cd988bae52eaf52e7d625deafa0c241b97033eb897b05ba68cba219b99b02eeee5eecbc488aecfc2826a66ce0a00b19f5fc52c08d13992c15a016030ae6e08486d0f1b626cd294a7fd2641f6e864eecf54cfc9ec716ae7d774bec7b5a8d9b6f44483d04a9424cf4734b762290f90c2be09589a13341dfed4ecf20dc24a973e740ca9d1569dca6fba26e01f952440b4557d2097afc91a5c97c43d6808d58a069efe672b2333c1fa9fe002d2b594dfe6506fd3d686db061d89635ddd612fe2923d0515983210fdf728be81cb22e8860bd2b1f082fa2ee5c2875a27039deded7e64b322a505615b87cf27cab614ed459964a51e88b948126e9958d0da5eb2efe916e3cde0b1d078e3247c61d0df2e8f9dd64bc53c646eb94e2689c170b4c03444561efb56986d873af7baeb39424aaf2e3cf3698700cb5c40f7bdd43c18792907d8f89b848f370e02cf1e5c95067fbb450c21db0c191d1cb78520cd8a5caeffbf52a5db3e5823c7bf7af4aa7c27ae7363e6ae1b19b0bd3ddbc3ff39d7ec33
0.000975 S->C 004b01fa00000000f20100000000
0.000990 S->C 004b01faf2010000f2010000f201871d91ce1ca80af3a0c0581d99048ad75ecd565ca740c0864e80506f0e1112a9188d903493810de640c76ef5c7a60d3579e63e092ba53b9e7023e8011691e9d02c5a23593cf1135eea0a12dd8b9b3311a1f374693796b01b145347ca040f12ccc29abe72ef3db85cc9792cfb60adf271c48b622d75cd988bae52eaf52e7d625deafa0c241b97033eb897b05ba68cba219b99b02eeee5eecbc488aecfc2826a66ce0a00b19f5fc52c08d13992c15a016030ae6e08486d0f1b626cd294a7fd2641f6e864eecf54cfc9ec716ae7d774bec7b5a8d9b6f44483d04a9424cf4734b762290f90c2be09589a13341dfed4ecf20dc24a973e740ca9d1569dca6fba26e01f952440b4557d2097afc91a5c97c43d6808d58a069efe672b2333c1fa9fe002d2b594dfe6506fd3d686db061d89635ddd612fe2923d0515983210fdf728be81cb22e8860bd2b1f082fa2ee5c2875a27039deded7e64b322a505615b87cf27cab614ed459964a51e88b948126e9958d0da5eb2efe916e3cde0b1d078e3247c61d0df2e8f9dd64bc53c646eb94e2689c170b4c03444561efb56986d873af7baeb39424aaf2e3cf3698700cb5c40f7bdd43c18792907d8f89b848f370e02cf1e5c95067fbb450c21db0c191d1cb78520cd8a5caeffbf52a5db3e5823c7bf7af4aa7c27ae7363e6ae1b19b0bd3ddbc3ff39d7ec33
0.001010 C->S 00ba969de4030000f2010000f20169f566489d12912a068ea787fc6933ca3b15ea69eb27c987f49222190d2ef85225b3d28966c6fc900dec54b93b7e2c207510bd6c139631bbcb7b47321b2027d1951a9f1203eb84cf3a1dd47acc707e12794d1152ccb076cc298cc9b78242ab8d151dcc66d14098bb98de58cf71766d2accd2307f1e75913ccc1a0fbb84f6e124bd2104c65b1771faca5619da5770d8a231382b838303f27403f6228601442a7bf17bf395f5edaee7f42cb33a2b1f15f41d65458a959141d907fe3924477603d91f4fed5347d36d08974542b364fe7a0fba3f177c7ef869ed41c2bdff8ebd2c4866ba544f397d21d8c5997294e2e9715136e8b5bb64f7f50b7b2761429718d6977c467cc44c19fd5930d232e282af5827adf88cbef6c9c3e12357460c078b5cd98ac6bf1063d9fe1eec2185d3c8a20b6250a973852ce4ae1383ecdb4e0cb82bf9ac71afa916cbc778850fc12b8be9af579a57af9ef968fd4e9d966b1e4e98f283a7012cde2576cc7d5af3b6213f5ea97fbb2262cf9745b9b8b4abf34141f275507ed71d2d0511e3727b165ce4e07b6df7cd7f806135feb2e7f93217b558a8a316be3119a8f177524cf22f679f3095eb00d599d81965294499881e723284c1b8a2ca3fb036ae79c13a8dc3170df15f83e5565c5baa3c8228efedce5d83de82c80e3122ac4fe08ea1bada1e55a0d6da342879ba
0.001022 S->C 004b01faf2010000e40300000000
0.001026 S->C 004b01fae4030000e4030000f20169f566489d12912a068ea787fc6933ca3b15ea69eb27c987f49222190d2ef85225b3d28966c6fc900dec54b93b7e2c207510bd6c139631bbcb7b47321b2027d1951a9f1203eb84cf3a1dd47acc707e12794d1152ccb076cc298cc9b78242ab8d151dcc66d14098bb98de58cf71766d2accd2307f1e75913ccc1a0fbb84f6e124bd2104c65b1771faca5619da5770d8a231382b838303f27403f6228601442a7bf17bf395f5edaee7f42cb33a2b1f15f41d65458a959141d907fe3924477603d91f4fed5347d36d08974542b364fe7a0fba3f177c7ef869ed41c2bdff8ebd2c4866ba544f397d21d8c5997294e2e9715136e8b5bb64f7f50b7b2761429718d6977c467cc44c19fd5930d232e282af5827adf88cbef6c9c3e12357460c078b5cd98ac6bf1063d9fe1eec2185d3c8a20b6250a973852ce4ae1383ecdb4e0cb82bf9ac71afa916cbc778850fc12b8be9af579a57af9ef968fd4e9d966b1e4e98f283a7012cde2576cc7d5af3b6213f5ea97fbb2262cf9745b9b8b4abf34141f275507ed71d2d0511e3727b165ce4e07b6df7cd7f806135feb2e7f93217b558a8a316be3119a8f177524cf22f679f3095eb00d599d81965294499881e723284c1b8a2ca3fb036ae79c13a8dc3170df15f83e5565c5baa3c8228efedce5d83de82c80e3122ac4fe08ea1bada1e55a0d6da342879ba
0.001034 C->S 00ba969db0040000e4030000cc00b7694588b0d7c0e4e96b927b0fb5cca95439b7def82f9c849aabc7fda0d1520bc40a43f3ecc8294315a74f230ab299ba573a71684d3c276eb5b1e16300f684ce6cbb4ec8f9bd71be188f339bda51a421287ab0328e65b92525d6e560f2201f0977b5ec208464b502f264d059b36cdc4f6c39b36985b35a01d10f4e86309424957ccdccf261e50fc7ee66b0538690f32616080fad1c8e79cdd5624b74d7e49700426bbbce172f83961e9e4735fafd4bfa40349b4752dd7ea49a0bc57a11f8eb64025ee0f21d939a2f69a4a655
0.001041 S->C 004b01fae4030000b00400000000
0.001045 S->C 004b01fab0040000b0040000cc00b7694588b0d7c0e4e96b927b0fb5cca95439b7def82f9c849aabc7fda0d1520bc40a43f3ecc8294315a74f230ab299ba573a71684d3c276eb5b1e16300f684ce6cbb4ec8f9bd71be188f339bda51a421287ab0328e65b92525d6e560f2201f0977b5ec208464b502f264d059b36cdc4f6c39b36985b35a01d10f4e86309424957ccdccf261e50fc7ee66b0538690f32616080fad1c8e79cdd5624b74d7e49700426bbbce172f83961e9e4735fafd4bfa40349b4752dd7ea49a0bc57a11f8eb64025ee0f21d939a2f69a4a655
0.001052 C->S 00ba969db0040000b00400000000
0.001084 C->S 05ba969db0040000
0.001098 S->C 064b01fa
0.402239 C->S 07ba969d
0.403665 S->C 064b01fa
#
# Answers of a reference listener to single hand-made datagrams (request hex -> reply hex):
# 00112233 + 10 zero bytes (DATA, unknown tag)        -> 08112233
# 014d4e455402aabbcc (INIT, version 2)                  -> 08aabbcc
# 014d4e455801aabbcc (INIT, bad magic)                  -> (nothing)
# 014d4e455401aa (INIT, 7 bytes)                        -> (nothing)
# 014d4e455401aabbcc (INIT, valid)                      -> 02 <3-byte listener tag> aabbcc 01 <4-byte expiration> <20-byte HMAC>
# 03 + 31 bytes of 01 (COOKIE-ECHO, bad HMAC)           -> (nothing)
# 000102 (3 bytes)                                      -> (nothing)
# 09010203 (unknown type 9, unknown tag)                -> 08010203
"""  # noqa: E501


@dataclass(frozen=True)
class TraceDatagram:
    time: float
    #: "C->S" (connector to listener) or "S->C".
    direction: str
    data: bytes


def trace_session(text: str = REFERENCE_TRACE) -> list[TraceDatagram]:
    """The datagrams of the captured session, in order."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        time, direction, hexdata = line.split()
        out.append(TraceDatagram(float(time), direction, bytes.fromhex(hexdata)))
    return out


def trace_probes(text: str = REFERENCE_TRACE) -> list[tuple[str, bytes, str]]:
    """The hand-made probes: (request description, request bytes, reply description)."""
    out = []
    for line in text.splitlines():
        if not line.startswith("# 0") or "->" not in line:
            continue
        request, reply = line[2:].rsplit("->", 1)
        spec = request.split("(", 1)[0].strip()
        if spec.startswith("03 + 31 bytes of 01"):
            data = bytes([3]) + b"\x01" * 31
        elif spec.startswith("00112233 + 10 zero bytes"):
            data = bytes.fromhex("00112233") + bytes(10)
        else:
            data = bytes.fromhex(spec.replace(" ", ""))
        out.append((request.strip(), data, reply.strip()))
    return out
