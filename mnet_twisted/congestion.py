"""
Congestion controllers behind one small interface.

The sender decides *when* a loss happened (once per recovery episode) and
asks the controller *how much* to slow down; the controller only ever sees
acknowledged byte counts, RTT samples and those loss events.  Two ship:

- :class:`NewReno` — RFC 5681/6582 arithmetic: halve on every loss event.
- :class:`Adaptive` (the default) — NewReno's increase, but it tells random
  loss from congestion by the queue a loss comes with: a loss while the
  recent RTT is close to the path's minimum found no queue to overflow, so
  the window is kept; a loss with a standing queue is halved as NewReno
  does, which keeps it fair to TCP at a shared bottleneck.  Slow start ends
  when the RTT rises (HyStart++, RFC 9406) rather than by overflowing a queue.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["CONTROLLERS", "Adaptive", "CongestionController", "NewReno", "make_controller"]


class CongestionController(Protocol):
    cwnd: int
    ssthresh: int

    def on_ack(
        self, acked: int, rtt_sample: float | None, min_rtt: float | None, round_start: bool
    ) -> None:
        """``acked`` new bytes were acknowledged outside loss recovery."""

    def on_app_limited_sample(self, rtt_sample: float) -> None:
        """An RTT sample from an ack of data the application, not the window, held back."""

    def on_congestion_event(self, min_rtt: float | None) -> bool:
        """A loss starts a recovery episode; returns whether the window was reduced."""

    def on_persistent_congestion(self) -> None:
        """Several timeouts in a row: nothing gets through at this rate."""

    def undo(self) -> None:
        """The reductions since the window last grew answered no loss: take them back."""

    def set_segment_size(self, mss: int) -> None:
        """The path was found to carry larger segments of ``mss`` payload bytes."""


class NewReno:
    """The congestion window, in bytes: slow start, avoidance, halving on loss."""

    __slots__ = (
        "_avoidance_credit",
        "_before_reduction",
        "_max_window",
        "_mss",
        "cwnd",
        "ssthresh",
    )

    def __init__(self, mss: int, initial_window_segments: int, max_window: int) -> None:
        self._mss = mss
        self._max_window = max(max_window, 2 * mss)
        self.cwnd = min(self._max_window, initial_window_segments * mss)
        self.ssthresh = self._max_window
        self._avoidance_credit = 0
        self._before_reduction: tuple[int, int] | None = None

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def on_ack(
        self, acked: int, rtt_sample: float | None, min_rtt: float | None, round_start: bool
    ) -> None:
        if acked:
            self._before_reduction = None  # the window grows again: no undo now
        if self.cwnd < self.ssthresh:
            self.cwnd += acked
        else:
            self._avoidance_credit += acked
            if self._avoidance_credit >= self.cwnd:
                self._avoidance_credit -= self.cwnd
                self.cwnd += self._mss
        if self.cwnd > self._max_window:
            self.cwnd = self._max_window

    def on_app_limited_sample(self, rtt_sample: float) -> None:
        pass  # loss alone drives this controller

    def on_congestion_event(self, min_rtt: float | None) -> bool:
        if self._before_reduction is None:
            # Reductions in a row with no growth between (timeouts through a
            # long stall) are undone together, back to the window before them.
            self._before_reduction = (self.cwnd, self.ssthresh)
        self.ssthresh = max(self.cwnd // 2, 2 * self._mss)
        self.cwnd = self.ssthresh
        self._avoidance_credit = 0
        return True

    def on_persistent_congestion(self) -> None:
        self.cwnd = 2 * self._mss

    def set_segment_size(self, mss: int) -> None:
        self._mss = mss
        self.cwnd = max(self.cwnd, min(self._max_window, 2 * mss))

    def undo(self) -> None:
        if self._before_reduction is not None:
            cwnd, ssthresh = self._before_reduction
            self.cwnd = max(self.cwnd, cwnd)
            self.ssthresh = max(self.ssthresh, ssthresh)
            self._before_reduction = None


#: HyStart++ (RFC 9406): RTT samples per round before a delay increase counts,
#: and the bounds of the increase that ends slow start.
_HYSTART_MIN_SAMPLES = 8
_HYSTART_MIN_ETA = 0.004
_HYSTART_MAX_ETA = 0.016
#: A queue shorter than this (the base RTT, within these bounds) is taken as
#: no congestion: a user-space receiver's read batching and scheduling add
#: that much on a LAN or loopback, and a loss that comes with no more queue
#: than that did not overflow anything.
_QUEUE_MIN = 0.001
_QUEUE_MAX = 0.010
#: A queue of fewer segments than this never stops growth (Vegas's beta): at
#: low rates a few segments are worth many milliseconds.
_QUEUE_SEGMENTS = 4
#: Rounds after a loss that came with a full queue during which growth
#: ignores the queue: someone else keeps it full (a loss-based flow such
#: as TCP), and holding back would only hand it the link.
_COMPETING_ROUNDS = 64
#: Rounds in a row with more queue than twice the allowance while our own
#: growth waits, after which someone else keeps it full: we hold so little
#: of that queue that waiting for it to drain would wait forever.
_STANDING_QUEUE_ROUNDS = 8


class Adaptive(NewReno):
    """
    NewReno that keeps its own queue short and ignores losses without one.

    - Growth (slow start and avoidance) stops once the least recent RTT
      stands more than half the allowance above the minimum: the window then
      fills the path plus a short queue, and grows again as that drains.
    - A loss with less queue than the allowance is taken as random and
      keeps the window; one with more halves it, as NewReno does.
    - After such a congestion loss, growth ignores the queue for a while: a
      competing loss-based flow keeps the queue full, and a delay-bounded
      window would starve beside it.
    - A whole round without a queue outside that while reopens slow start:
      nothing shows a bottleneck near, and whatever ended the last one (a
      receiver's slow first reads, a queue that has drained since) no
      longer holds.  HyStart and the queue end it again.
    """

    __slots__ = (
        "_competing_rounds",
        "_last_round_min",
        "_round_min",
        "_round_samples",
        "_sampled_since_loss",
        "_standing_rounds",
    )

    def __init__(self, mss: int, initial_window_segments: int, max_window: int) -> None:
        super().__init__(mss, initial_window_segments, max_window)
        #: The least RTT sample of the current round and of the last whole
        #: one: together they tell the standing queue (below).
        self._round_min: float | None = None
        self._round_samples = 0
        self._last_round_min: float | None = None
        self._competing_rounds = 0
        self._standing_rounds = 0
        #: Whether an RTT sample came since the last loss event: only a fresh
        #: one may clear a loss.
        self._sampled_since_loss = False

    @property
    def competing(self) -> bool:
        """Whether a recent loss showed another flow keeping the queue full."""
        return self._competing_rounds > 0

    def on_ack(
        self, acked: int, rtt_sample: float | None, min_rtt: float | None, round_start: bool
    ) -> None:
        if round_start:
            self._start_round(min_rtt)
        if rtt_sample is not None:
            self._sampled_since_loss = True
            if self._round_min is None or rtt_sample < self._round_min:
                self._round_min = rtt_sample
            self._round_samples += 1
            if self.cwnd < self.ssthresh and self._rtt_rose():
                self.ssthresh = self.cwnd
        if self._holding(min_rtt):
            if self.cwnd < self.ssthresh:
                self.ssthresh = self.cwnd
            return
        NewReno.on_ack(self, acked, rtt_sample, min_rtt, round_start)

    def on_app_limited_sample(self, rtt_sample: float) -> None:
        # Still evidence of the queue (or its absence) for the next loss and
        # for the round it falls in; no growth, so nothing else to judge.
        self._sampled_since_loss = True
        if self._round_min is None or rtt_sample < self._round_min:
            self._round_min = rtt_sample
        self._round_samples += 1

    def _start_round(self, min_rtt: float | None) -> None:
        """A round ended: remember its least RTT and judge the queue it showed."""
        ended = self._round_min
        if ended is not None:
            self._last_round_min = ended
            if (
                self.cwnd >= self.ssthresh
                and not self._competing_rounds
                and self._round_samples >= _HYSTART_MIN_SAMPLES
                and min_rtt is not None
                and ended - min_rtt < _queue_allowance(min_rtt) / 4
            ):
                self.ssthresh = self._max_window  # no queue all round: slow start again
        self._round_min, self._round_samples = None, 0
        if self._competing_rounds:
            self._competing_rounds -= 1
        elif self._queue_stands(min_rtt):
            self._standing_rounds += 1
            if self._standing_rounds >= _STANDING_QUEUE_ROUNDS:
                self._standing_rounds = 0
                self._competing_rounds = _COMPETING_ROUNDS
        else:
            self._standing_rounds = 0

    def on_congestion_event(self, min_rtt: float | None) -> bool:
        fresh, self._sampled_since_loss = self._sampled_since_loss, False
        # A loss is excused only on fresh evidence that there is no queue:
        # a long recovery gives no samples, and the last ones may predate
        # another flow filling the queue.
        if (
            fresh
            and min_rtt is not None
            and not self._queue_exceeds(min_rtt, _queue_allowance(min_rtt))
        ):
            return False
        self._competing_rounds = _COMPETING_ROUNDS
        return super().on_congestion_event(min_rtt)

    def _holding(self, min_rtt: float | None) -> bool:
        """Whether our own queue is long enough: growth waits until it drains."""
        return (
            min_rtt is not None
            and not self._competing_rounds
            and self._queue_exceeds(min_rtt, _queue_allowance(min_rtt) / 2)
        )

    def _queue_stands(self, min_rtt: float | None) -> bool:
        """Whether a queue well past what our own holding allows stood all round."""
        return min_rtt is not None and self._queue_exceeds(min_rtt, 2 * _queue_allowance(min_rtt))

    def _rtt_rose(self) -> bool:
        last, current = self._last_round_min, self._round_min
        if last is None or current is None or self._round_samples < _HYSTART_MIN_SAMPLES:
            return False
        eta = min(_HYSTART_MAX_ETA, max(_HYSTART_MIN_ETA, last / 8))
        return current >= last + eta

    def _queue_exceeds(self, min_rtt: float, delay: float) -> bool:
        # A standing queue is one that did not drain for a whole round (as
        # CoDel judges one over its interval).  The samples within a round
        # rise and fall with the receiver's and our own read batching: on a
        # busy host the acks of one burst wait milliseconds for their turn
        # while the network holds no queue at all, so the latest few samples
        # alone would take that wait for congestion.
        recent = self._standing_rtt()
        if recent is None:
            return False
        queueing = recent - min_rtt
        queued_bytes = self.cwnd * queueing / recent if recent > 0 else 0.0
        return queueing > delay and queued_bytes > _QUEUE_SEGMENTS * self._mss

    def _standing_rtt(self) -> float | None:
        """The least RTT of this round once it has enough samples, else of it and the last."""
        current, last = self._round_min, self._last_round_min
        if current is None:
            return last
        if last is None or self._round_samples >= _HYSTART_MIN_SAMPLES:
            return current
        return min(current, last)


def _queue_allowance(min_rtt: float) -> float:
    return min(_QUEUE_MAX, max(_QUEUE_MIN, min_rtt / 4))


CONTROLLERS: dict[str, type[NewReno]] = {"adaptive": Adaptive, "newreno": NewReno}


def make_controller(
    name: str, mss: int, initial_window_segments: int, max_window: int
) -> CongestionController:
    """The controller called ``name`` (a key of :data:`CONTROLLERS`)."""
    try:
        kind = CONTROLLERS[name]
    except KeyError:
        raise ValueError(f"unknown congestion controller {name!r}") from None
    return kind(mss, initial_window_segments, max_window)
