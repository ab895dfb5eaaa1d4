"""habits.ReceiverHabits: telling receivers that keep out-of-order data from ones that drop it."""

from __future__ import annotations

from mnet_twisted.habits import (
    HABIT_SEGMENTS,
    KEPT_JUMP_SEGMENTS,
    STOPS_BEFORE_GOING_BACK,
    ReceiverHabits,
)

MSS = 1000


def test_a_receiver_acking_every_segment_is_not_taken_for_ours() -> None:
    habits = ReceiverHabits()
    for _ in range(10 * HABIT_SEGMENTS):
        habits.in_order_ack(MSS, MSS)
    assert not habits.keeps_out_of_order


def test_a_receiver_acking_every_second_segment_keeps_out_of_order_data() -> None:
    habits = ReceiverHabits()
    for _ in range(HABIT_SEGMENTS // 2 - 1):
        habits.in_order_ack(2 * MSS, MSS)
    assert not habits.keeps_out_of_order  # too few segments yet to tell
    habits.in_order_ack(2 * MSS, MSS)
    assert habits.keeps_out_of_order


def test_stops_at_repairs_grow_bursts_then_a_go_back() -> None:
    habits = ReceiverHabits()
    bursts = []
    for step in range(STOPS_BEFORE_GOING_BACK):
        assert not habits.discards_out_of_order
        habits.repair_answered(10 * MSS * (step + 1), 10 * MSS * (step + 1), True, MSS)
        bursts.append(habits.burst_after_stop())
    assert bursts == [0, 2, 4]
    assert habits.discards_out_of_order


def test_a_stop_with_nothing_reported_beyond_is_no_stop() -> None:
    habits = ReceiverHabits()
    for _ in range(2 * STOPS_BEFORE_GOING_BACK):
        habits.repair_answered(5 * MSS, 5 * MSS, False, MSS)
    assert habits.stops_in_a_row == 0
    assert not habits.discards_out_of_order


def test_a_jump_past_a_repair_proves_the_data_was_kept() -> None:
    habits = ReceiverHabits()
    for _ in range(STOPS_BEFORE_GOING_BACK):
        habits.repair_answered(MSS, MSS, True, MSS)
    assert habits.discards_out_of_order
    habits.repair_answered(MSS + (KEPT_JUMP_SEGMENTS - 1) * MSS, MSS, True, MSS)
    assert habits.discards_out_of_order  # a few segments may be in-order data after the repair
    habits.repair_answered(MSS + KEPT_JUMP_SEGMENTS * MSS, MSS, True, MSS)
    assert habits.keeps_out_of_order
    assert not habits.discards_out_of_order
    assert habits.burst_after_stop() == 0
