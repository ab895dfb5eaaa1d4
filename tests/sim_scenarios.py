"""
Loss-recovery scenarios on the simulated network (``simnet``), with their targets.

``bench/sim_loss.py`` runs them all and prints a table;
``tests/test_sim_loss_recovery.py`` runs them at the same sizes (the whole
file takes well under a minute of wall time) and asserts one target per
test.  Both import this module so that the benchmark and the tests measure
exactly the same thing, and each target is stated once.

Every scenario is a one-way bulk transfer from ``simnet.connected_pair``'s
connector to its listener, repeated for several seeds; a :class:`Row` holds
the seeded :class:`Transfer` records, optionally the same seeds on a
baseline link (loss-free, or without reordering), and the :class:`Check`
objects that say what the engine should achieve.  Figures are medians over
the seeds.  Simulated time is deterministic, so a check that fails today
fails the same way every run: these are not flaky timing tests.

What is measured about the sender comes from two places:

* ``Session.recovery_stats()`` where the engine offers it (a dict with the
  keys in :data:`RECOVERY_KEYS`);
* otherwise a :class:`SenderWatch` looking at the sender from outside the
  engine (its DATA on the wire, the acknowledgements it hears, the timer
  calls it gets), so that the figures exist before the engine reports them
  and can be cross-checked after.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from simnet import Address, Host, Link, SimNet, connected_pair, payload

from mnet_twisted import wire
from mnet_twisted.config import SessionConfig
from mnet_twisted.seqnum import unwrap

__all__ = [
    "FAST_PATH",
    "MB",
    "MIB",
    "PATH_50MS",
    "RATE_100MBIT",
    "RECOVERY_KEYS",
    "SEEDS",
    "Check",
    "InteropRow",
    "Row",
    "SenderWatch",
    "Transfer",
    "bench_rows",
    "clean_path",
    "fast_path",
    "interop",
    "median",
    "path_50ms_keeps_goodput",
    "path_50ms_lossy",
    "reordering",
    "reordering_link",
    "run_transfer",
    "size_label",
]

SEEDS: tuple[int, ...] = (1, 2, 3, 4, 5)
MB = 1_000_000
MIB = 1024 * 1024
#: 100 Mbit/s in bytes per second.
RATE_100MBIT = 12_500_000.0

#: 0.1 ms round trip, no bottleneck: a LAN or loopback.
FAST_PATH = Link(delay=0.00005)
#: 50 ms round trip through a 100 Mbit/s bottleneck with a 50 ms drop-tail queue
#: (one bandwidth-delay product, 625 kB).
PATH_50MS = Link(delay=0.025, rate=RATE_100MBIT, queue_limit=0.05)

#: Keys of ``Session.recovery_stats()``, in the order the benchmark shows them.
RECOVERY_KEYS: tuple[str, ...] = (
    "data_datagrams_sent",
    "retransmissions",
    "timeouts",
    "longest_timeout_wait",
    "go_back_passes",
    "spurious_undos",
    "congestion_reductions",
)

#: Generous simulated-time and step limits for one transfer: a scenario that
#: hits them has failed anyway, and the error says where it stood.
MAX_SIMULATED_SECONDS = 900.0
MAX_STEPS = 5_000_000


def reordering_link(delay: float, *, reorder: bool = True) -> Link:
    """100 Mbit/s path whose packets are, 1 % of them, held back by up to 5 ms.

    The rate gives the sender a window to fill, so that a late packet is
    overtaken by dozens of others and looks like a loss to a duplicate-ack
    counter.  ``reorder=False`` is the same link in order, the baseline.  Its
    queue (100 ms, 1.25 MB) holds the default ``max_congestion_window`` (1 MiB)
    whole, so that baseline is loss-free, as the targets ("within 2x the
    loss-free time") mean it: the comparison measures reordering alone, not
    reordering plus slow-start overshoot at a full queue.
    """
    return Link(
        delay=delay,
        rate=RATE_100MBIT,
        queue_limit=0.1,
        reorder=0.01 if reorder else 0.0,
        reorder_delay=0.005,
    )


# -- watching the sender from outside the engine ---------------------------------


class SenderWatch:
    """Observes one sending host without touching the engine's internals.

    It counts the sender's DATA datagrams that carry payload (through the
    ``net.drop`` hook, which sees every datagram before the link impairs
    it), and wraps the host demultiplexer's ``receive_datagram`` and
    ``handle_timers`` to learn when the sender last heard anything and when
    its timer fired.  From that it derives:

    * a *timeout*: payload DATA sent at an instant when the timer fired and
      nothing arrived; its *wait* is how long the sender had been stuck by
      then: since the later of the last acknowledgement that advanced and the
      last DATA it sent (duplicate acks are no progress);
    * a *go-back pass*: a run of retransmitted segments that starts beyond the
      highest acknowledgement heard (NewReno only ever repairs the segment
      at that acknowledgement; resending what follows it is going back N).

    These are the engine-independent fallbacks for ``recovery_stats()``.  The
    timeout figures count every timer-driven DATA, so for an engine with
    other timers than the retransmission timeout (pacing, a reordering
    timer) they are an upper bound; the engine's own counters, when it has
    them, take precedence.
    """

    def __init__(self, net: SimNet, host: Host, start: float) -> None:
        self.net = net
        self.addr: Address = host.addr
        origin = host.config.stream_origin
        self.data_sent = 0
        self.retransmissions = 0
        self.timeouts = 0
        self.timeout_waits: list[float] = []
        self.go_back_passes = 0
        self._highest_end = origin
        self._highest_ack = origin
        self._last_go_back_end: int | None = None
        self._last_heard = start
        self._last_progress = start
        self._last_sent = start
        self._timer_at: float | None = None
        self._stuck_at_timer = 0.0
        self._last_timeout_at: float | None = None

        self._previous_drop = net.drop
        net.drop = self._on_send
        host.on_datagram = self._on_datagram
        host.on_timers = self._on_timers

    def _on_datagram(self, data: bytes, address: Address, now: float) -> None:
        self._on_receive(data, now)

    def _on_timers(self, now: float) -> None:
        self._timer_at = now
        self._stuck_at_timer = now - max(self._last_progress, self._last_sent)

    @property
    def longest_timeout_wait(self) -> float:
        return max(self.timeout_waits, default=0.0)

    @property
    def total_timeout_wait(self) -> float:
        return sum(self.timeout_waits)

    def _on_receive(self, data: bytes, now: float) -> None:
        self._last_heard = now
        if len(data) >= wire.DATA_HEADER_SIZE and data[0] == wire.PacketType.DATA:
            ack = unwrap(int.from_bytes(data[8:12], "little"), self._highest_ack)
            if ack > self._highest_ack:
                self._highest_ack = ack
                self._last_progress = now

    def _on_send(self, data: bytes, src: Address, dst: Address) -> bool:
        """The ``net.drop`` hook: records the sender's payload DATA.

        It drops nothing itself; a filter installed before it still decides.
        """
        if (
            src == self.addr
            and len(data) > wire.DATA_HEADER_SIZE
            and data[0] == wire.PacketType.DATA
        ):
            self._on_data_sent(data)
        return self._previous_drop is not None and self._previous_drop(data, src, dst)

    def _on_data_sent(self, data: bytes) -> None:
        now = self.net.now
        self.data_sent += 1
        end = unwrap(int.from_bytes(data[4:8], "little"), self._highest_end)
        start = end - int.from_bytes(data[12:14], "little")
        if end <= self._highest_end:
            self.retransmissions += 1
            if start > self._highest_ack:
                if start != self._last_go_back_end:
                    self.go_back_passes += 1
                self._last_go_back_end = end
        self._highest_end = max(self._highest_end, end)
        if now == self._timer_at and self._last_heard != now and self._last_timeout_at != now:
            self._last_timeout_at = now
            self.timeouts += 1
            self.timeout_waits.append(self._stuck_at_timer)
        self._last_sent = now


# -- one transfer --------------------------------------------------------------------


@dataclass(frozen=True)
class Transfer:
    """What one seeded transfer measured.  Times are simulated seconds."""

    seed: int
    size: int
    #: From the first write to the last byte delivered to the receiving application.
    seconds: float
    #: DATA datagrams with payload the sender put on the wire (seen by SenderWatch).
    data_datagrams: int
    #: ceil(size / max_segment_size): what a perfect sender would send.
    needed: int
    #: The sender's counters, RECOVERY_KEYS -> value; None where nobody knows it.
    recovery: dict[str, float | None]
    #: Which keys of ``recovery`` came from ``Session.recovery_stats()``.
    from_engine: frozenset[str]
    #: SenderWatch's own figures under the same keys, to cross-check the engine's.
    observed: dict[str, float]
    #: Simulated time the sender spent stuck before its timer fired (SenderWatch).
    timeout_wait_total: float
    #: Datagrams (either direction) the link lost at random, and dropped at a full queue.
    link_losses: int
    queue_drops: int
    smoothed_rtt: float | None
    #: Wall-clock seconds this simulation took (not deterministic, for the bench only).
    wall_seconds: float = field(compare=False)

    @property
    def goodput(self) -> float:
        """Delivered bytes per simulated second."""
        return self.size / self.seconds if self.seconds > 0 else math.inf

    @property
    def overhead(self) -> float:
        """DATA datagrams sent per datagram needed (1.0 is perfect)."""
        return self.data_datagrams / self.needed


def _observed(watch: SenderWatch) -> dict[str, float]:
    """SenderWatch's figures, named as the keys of ``recovery_stats()``."""
    return {
        "data_datagrams_sent": watch.data_sent,
        "retransmissions": watch.retransmissions,
        "timeouts": watch.timeouts,
        "longest_timeout_wait": watch.longest_timeout_wait,
        "go_back_passes": watch.go_back_passes,
    }


def _recovery(session: Any, watch: SenderWatch) -> tuple[dict[str, float | None], frozenset[str]]:
    """The engine's ``recovery_stats()`` where it has them, else the best fallback.

    The fallback is the session's own ``retransmissions`` counter where it
    has one, SenderWatch's figures for the rest, and None (unknown) for what
    only the engine can tell (undone reductions, window reductions).
    """
    fallback: dict[str, float | None] = {
        **_observed(watch),
        "retransmissions": getattr(session, "retransmissions", watch.retransmissions),
        "spurious_undos": None,
        "congestion_reductions": None,
    }
    stats = getattr(session, "recovery_stats", None)
    reported: dict[str, Any] = dict(stats()) if callable(stats) else {}
    merged = {key: reported.get(key, fallback[key]) for key in RECOVERY_KEYS}
    return merged, frozenset(key for key in RECOVERY_KEYS if key in reported)


@functools.cache
def run_transfer(
    seed: int, link: Link, size: int, config: SessionConfig | None = None
) -> Transfer:
    """Send ``size`` bytes one way over ``link`` (both directions) and measure it.

    Cached: the benchmark and the tests ask for the same baseline runs many
    times, and a run is a pure function of its arguments.
    """
    started = time.perf_counter()
    net, client, _server, conn, peer = connected_pair(seed=seed, link=link, config=config)
    data = payload(size, seed=seed)
    watch = SenderWatch(net, client, net.now)
    lost, queue_dropped = net.stats.lost, net.stats.queue_dropped
    client.write(conn, data)
    seconds = net.run_until(
        lambda: len(peer.received) >= size,
        max_time=MAX_SIMULATED_SECONDS,
        max_steps=MAX_STEPS,
        what=f"{size} bytes delivered (seed {seed}, {link})",
    )
    if bytes(peer.received) != data:
        raise AssertionError(f"seed {seed}: the received stream differs from what was written")
    recovery, from_engine = _recovery(conn.session, watch)
    return Transfer(
        seed=seed,
        size=size,
        seconds=seconds,
        data_datagrams=watch.data_sent,
        needed=math.ceil(size / client.config.max_segment_size),
        recovery=recovery,
        from_engine=from_engine,
        observed=_observed(watch),
        timeout_wait_total=watch.total_timeout_wait,
        link_losses=net.stats.lost - lost,
        queue_drops=net.stats.queue_dropped - queue_dropped,
        smoothed_rtt=getattr(conn.session, "smoothed_rtt", None),
        wall_seconds=time.perf_counter() - started,
    )


def _runs(link: Link, size: int, seeds: Sequence[int]) -> tuple[Transfer, ...]:
    return tuple(run_transfer(seed, link, size) for seed in seeds)


# -- rows and their checks ---------------------------------------------------------------

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
}


def median(values: Sequence[float]) -> float:
    """The median as a float (the middle seed of an odd count)."""
    return float(statistics.median(values))


@dataclass(frozen=True)
class Check:
    """A target: the median over seeds of one figure, compared with a bound (== on every seed)."""

    #: Short identifier the tests select a check by.
    name: str
    #: What is compared, in words, with its unit.
    figure: str
    op: str
    bound: float
    per_seed: tuple[float, ...]
    #: Where the figure comes from when it is not plain arithmetic on the run.
    source: str = ""

    @property
    def median(self) -> float:
        return median(self.per_seed)

    @property
    def met(self) -> bool:
        # NaN (a figure nobody reported) compares false: it fails the check.
        # "Never" targets (==) hold on every seed, not only the middle one.
        if self.op == "==":
            return all(value == self.bound for value in self.per_seed)
        return _OPS[self.op](self.median, self.bound)

    def describe(self) -> str:
        return f"{self.figure} {self.op} {self.bound:g}"

    def message(self, where: str) -> str:
        """What an assertion (or the benchmark) says about this check."""
        seeds = ", ".join(f"{value:.4g}" for value in self.per_seed)
        source = f" [{self.source}]" if self.source else ""
        verdict = "met" if self.met else "NOT met"
        return (
            f"{where}: target {self.describe()} {verdict}: median {self.median:.4g} "
            f"(per seed: {seeds}){source}"
        )


@dataclass(frozen=True)
class Row:
    """One scenario case: seeded runs, an optional baseline on the same seeds, targets."""

    scenario: str
    case: str
    size: int
    runs: tuple[Transfer, ...]
    baseline: tuple[Transfer, ...] = ()
    #: What the baseline is, as a case name ("loss 0%", "in order").
    baseline_case: str = ""
    checks: tuple[Check, ...] = ()

    @property
    def title(self) -> str:
        return f"{self.scenario} / {self.case} / {size_label(self.size)}"

    def baseline_row(self) -> Row | None:
        """The baseline runs as a row of their own (the benchmark shows them too)."""
        if not self.baseline:
            return None
        case = self.baseline_case or "baseline"
        return Row(self.scenario, f"{case} (baseline)", self.size, self.baseline)

    def check(self, name: str) -> Check:
        """The check called ``name`` (the tests pick one per test)."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"{self.title} has no check {name!r}")

    def median(self, figure: Callable[[Transfer], float | None]) -> float | None:
        """Median of a per-run figure; None if any run lacks it."""
        values = [figure(run) for run in self.runs]
        if any(value is None for value in values):
            return None
        return median([float(value) for value in values if value is not None])

    def baseline_share(self) -> tuple[float, ...]:
        """Per seed: goodput on this link as a share of the baseline's (same seed)."""
        return tuple(
            base.seconds / run.seconds for run, base in zip(self.runs, self.baseline, strict=True)
        )

    def time_ratio(self) -> tuple[float, ...]:
        """Per seed: transfer time on this link over the baseline's (same seed)."""
        return tuple(
            run.seconds / base.seconds for run, base in zip(self.runs, self.baseline, strict=True)
        )

    def recovery(self, key: str) -> tuple[float, ...]:
        """Per seed: one recovery counter (NaN where nobody reports it)."""
        return tuple(_number(run.recovery.get(key)) for run in self.runs)

    def source(self, key: str) -> str:
        """Where ``key`` came from: ``recovery_stats()`` for every run, or a fallback."""
        if all(key in run.from_engine for run in self.runs):
            return "Session.recovery_stats()"
        if key == "retransmissions":
            return "Session.retransmissions: no recovery_stats() yet"
        if key in ("spurious_undos", "congestion_reductions"):
            return "not reported: no recovery_stats() yet"
        return "observed from outside the engine: no recovery_stats() yet"


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def size_label(size: int) -> str:
    """A byte count as the scenarios name it: 8 MiB, 2 MB, 60 kB."""
    if size % MIB == 0:
        return f"{size // MIB} MiB"
    if size >= MB:
        return f"{size / MB:g} MB"
    return f"{size / 1000:g} kB"


# -- the scenarios ----------------------------------------------------------------------


def fast_path(loss: float, size: int = 2 * MB, seeds: Sequence[int] = SEEDS) -> Row:
    """0.1 ms RTT at ``loss`` (both directions), against the loss-free path, same seeds.

    On such a path a timer of hundreds of milliseconds costs thousands of
    round trips per loss it has to repair, so the target is on the longest
    wait for a timeout: under 10 ms while the smoothed RTT is under 1 ms.
    """
    runs = _runs(dataclasses.replace(FAST_PATH, loss=loss), size, seeds)
    base = _runs(FAST_PATH, size, seeds)
    row = Row("fast path", f"0.1 ms RTT, loss {loss:.0%}", size, runs, base, "0.1 ms RTT, loss 0%")
    if not loss:
        return row
    wait = Check(
        "longest_timeout_wait",
        "longest timeout wait (s)",
        "<",
        0.010,
        row.recovery("longest_timeout_wait"),
        row.source("longest_timeout_wait"),
    )
    return dataclasses.replace(row, checks=(wait,))


def path_50ms_lossy(size: int = 1 * MB, seeds: Sequence[int] = SEEDS) -> Row:
    """1 MB over 50 ms RTT at 100 Mbit/s with 5 % loss: done in 2.5 s simulated.

    Without random loss, 1 MB takes about a third of a second on this path
    (mostly slow start); a sender that falls back on its timer whenever a
    retransmission is lost, or repairs one hole per round trip, takes many
    times that.
    """
    runs = _runs(dataclasses.replace(PATH_50MS, loss=0.05), size, seeds)
    base = _runs(PATH_50MS, size, seeds)
    row = Row("50 ms path", "100 Mbit/s, loss 5%", size, runs, base, "100 Mbit/s, loss 0%")
    time_check = Check("time", "transfer time (s)", "<=", 2.5, tuple(run.seconds for run in runs))
    return dataclasses.replace(row, checks=(time_check,))


def path_50ms_keeps_goodput(size: int = 8 * MIB, seeds: Sequence[int] = SEEDS) -> Row:
    """8 MiB over 50 ms RTT at 100 Mbit/s: 1 % loss keeps at least 25 % of loss-free goodput.

    "Loss-free" means no random loss: the 50 ms queue holds one
    bandwidth-delay product, so slow start may still overshoot it and lose a
    few datagrams at the queue, on a real path as here.
    """
    runs = _runs(dataclasses.replace(PATH_50MS, loss=0.01), size, seeds)
    base = _runs(PATH_50MS, size, seeds)
    row = Row("50 ms path", "100 Mbit/s, loss 1%", size, runs, base, "100 Mbit/s, loss 0%")
    share = Check("share", "goodput share of loss-free", ">=", 0.25, row.baseline_share())
    return dataclasses.replace(row, checks=(share,))


#: Reordering targets: time with reordering over time without, by one-way delay.
REORDERING_TIME_BOUNDS: dict[float, float] = {0.005: 2.0, 0.025: 1.1}


def reordering(delay: float, size: int = 2 * MB, seeds: Sequence[int] = SEEDS) -> Row:
    """1 % of packets held back up to 5 ms at 100 Mbit/s, against the same link in order.

    Reordering is not loss: it may cost a spurious fast retransmit now and
    then, never a go-back pass (resending what the receiver already holds)
    and never much time.
    """
    runs = _runs(reordering_link(delay), size, seeds)
    base = _runs(reordering_link(delay, reorder=False), size, seeds)
    rtt = f"{2 * delay * 1000:g} ms RTT"
    row = Row("reordering", f"{rtt}, 1% up to 5 ms late", size, runs, base, f"{rtt}, in order")
    checks = (
        Check(
            "time",
            "time / time without reordering",
            "<=",
            REORDERING_TIME_BOUNDS[delay],
            row.time_ratio(),
        ),
        Check(
            "go_back_passes",
            "go-back passes",
            "==",
            0,
            row.recovery("go_back_passes"),
            row.source("go_back_passes"),
        ),
    )
    return dataclasses.replace(row, checks=checks)


def clean_path(delay: float, size: int = 2 * MB, seeds: Sequence[int] = SEEDS) -> Row:
    """A loss-free, unconstrained path: nothing is ever sent twice.

    Whatever the timer or the loss detector does, on a clean path it must
    not fire: at most 5 % more datagrams than the stream needs, no
    retransmission at all.
    """
    runs = _runs(Link(delay=delay), size, seeds)
    row = Row("clean path", f"{2 * delay * 1000:g} ms RTT, no loss", size, runs)
    checks = (
        Check(
            "overhead",
            "DATA datagrams sent / needed",
            "<=",
            1.05,
            tuple(run.overhead for run in runs),
        ),
        Check(
            "retransmissions",
            "retransmissions",
            "==",
            0,
            row.recovery("retransmissions"),
            row.source("retransmissions"),
        ),
    )
    return dataclasses.replace(row, checks=checks)


@dataclass(frozen=True)
class InteropRow:
    """Ours versus a reference sender, both into a reference receiver (discards out-of-order)."""

    loss: float
    size: int
    ours: tuple[float, ...]
    reference: tuple[float, ...]

    @property
    def ratio_of_sums(self) -> float:
        """What tests/test_interop_reference.py bounds (1.1 loss-free, 0.8 under loss)."""
        return sum(self.ours) / sum(self.reference)


def interop(loss: float, size: int = 60_000, seeds: Sequence[int] = SEEDS) -> InteropRow:
    """Simulated transfer times into a reference receiver, using the interop tests' harness.

    Imported here, not at the top, so that collecting the loss-recovery
    tests never imports that test module a second time.
    """
    from test_interop_reference import _our_time_to_reference, _reference_to_reference_time

    return InteropRow(
        loss,
        size,
        tuple(_our_time_to_reference(seed, loss, size) for seed in seeds),
        tuple(_reference_to_reference_time(seed, loss, size) for seed in seeds),
    )


def bench_rows(seeds: Sequence[int] = SEEDS) -> list[Callable[[], Row]]:
    """Every scenario case at benchmark size, as thunks so the caller can time each."""
    thunks: list[Callable[[], Row]] = [
        functools.partial(fast_path, loss, seeds=seeds) for loss in (0.0, 0.01, 0.05, 0.10)
    ]
    thunks += [
        functools.partial(path_50ms_lossy, seeds=seeds),
        functools.partial(path_50ms_keeps_goodput, seeds=seeds),
    ]
    thunks += [functools.partial(reordering, delay, seeds=seeds) for delay in (0.005, 0.025)]
    thunks += [functools.partial(clean_path, delay, seeds=seeds) for delay in (0.00005, 0.005)]
    return thunks
