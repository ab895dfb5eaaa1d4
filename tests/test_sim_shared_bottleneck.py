"""
Two MNET flows through one drop-tail bottleneck, on the simulated network.

The second flow to start meets a queue the first keeps full.  Three ways
this went wrong, each of which this file's cases caught:

- Its slow start overshoots, and it spends seconds repairing holes one
  partial ack at a time with no clean RTT sample (Karn).  An estimate left
  from the empty path made every repair look lost long before its ack could
  come: each hole went three or four times, each resend was a new
  congestion signal, and the copies took a quarter of the link.
- The copies of segments the peer already had each drew a duplicate ack,
  which started the next needless episode, whose copies drew the next ones.
- A delay-bounded flow that no drop ever hit waited for a queue the other
  flow kept full, and settled for a third of the link.
"""

from __future__ import annotations

import pytest
from simnet import Link, SimNet

from mnet_twisted.config import SessionConfig

#: 20 Mbit/s with a 20 ms drop-tail queue, as the namespace bench's tbf.
RATE = 2_500_000.0
SECONDS = 8.0


def _share_a_bottleneck(
    controllers: tuple[str, str],
    second_starts_after: float,
    rate: float = RATE,
    queue: float = 0.02,
    seconds: float = SECONDS,
) -> list[tuple[float, dict[str, float]]]:
    net = SimNet(seed=1, link=Link(delay=0.0002))
    client = net.add_host("10.0.0.1", 4000)
    server = net.add_host("10.0.0.2", 5000, accepting=True)
    net.set_link(client, server, Link(delay=0.0002, rate=rate, queue_limit=queue))
    flows = [
        client.connect(server, SessionConfig(congestion_control=name)) for name in controllers
    ]
    net.run_until(lambda: all(flow.established for flow in flows))
    client.write(flows[0], b"x" * int(rate * (seconds + second_starts_after)))
    if second_starts_after:
        net.run_for(second_starts_after, max_steps=2_000_000)
    first = server.sessions()[0]
    before = len(first.received)
    client.write(flows[1], b"x" * int(rate * seconds))
    net.run_for(seconds, max_steps=2_000_000)
    received = [len(first.received) - before, len(server.sessions()[1].received)]
    return [
        (count / (rate * seconds), flow.session.recovery_stats())
        for count, flow in zip(received, flows, strict=True)
    ]


@pytest.mark.parametrize(
    ("controllers", "second_starts_after"),
    [
        (("adaptive", "adaptive"), 0.0),
        (("adaptive", "newreno"), 0.0),
        (("newreno", "adaptive"), 0.0),
        (("adaptive", "newreno"), 1.0),
    ],
    ids=["adaptive+adaptive", "adaptive+newreno", "newreno+adaptive", "newreno-1s-later"],
)
def test_two_flows_share_a_bottleneck_and_fill_it(
    controllers: tuple[str, str], second_starts_after: float
) -> None:
    flows = _share_a_bottleneck(controllers, second_starts_after)
    shares = [share for share, _ in flows]
    assert sum(shares) >= 0.9, f"link use {sum(shares):.0%} (shares {shares})"
    assert min(shares) >= 0.38, f"shares {shares}"
    for share, stats in flows:
        resent = stats["retransmissions"] / stats["data_datagrams_sent"]
        assert resent <= 0.1, f"{resent:.0%} of datagrams resent at share {share:.0%}: {stats}"


@pytest.mark.parametrize(
    "controllers", [("adaptive", "newreno"), ("newreno", "adaptive")], ids=["first", "second"]
)
def test_a_shallow_lan_bottleneck_is_shared_with_a_loss_based_flow(
    controllers: tuple[str, str],
) -> None:
    """100 Mbit/s with a 2 ms drop-tail queue: its overflows halve our window too.

    The queue a loss comes with is all that tells an overflow from random
    loss, and here it is never longer than 2 ms: an allowance that excused
    losses with up to 4 ms of queue (tried against a busy host's read
    delays) took 89 % of this link and left NewReno, TCP's arithmetic, 10 %.
    """
    flows = _share_a_bottleneck(controllers, 0.0, rate=12_500_000.0, queue=0.002, seconds=2.0)
    shares = [share for share, _ in flows]
    assert sum(shares) >= 0.9, f"link use {sum(shares):.0%} (shares {shares})"
    assert min(shares) >= 0.38, f"shares {shares}"
