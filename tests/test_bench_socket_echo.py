"""Smoke test for bench/socket_echo.py: a real-socket echo in one reactor, every byte checked."""

from __future__ import annotations

import re

from benchrun import run_bench


def test_socket_echo_reports_microseconds_per_round_trip() -> None:
    stdout = run_bench("socket_echo.py", "--messages", "200")
    figure = re.search(r"both ends: ([0-9.]+) µs", stdout)
    assert figure is not None and float(figure.group(1)) > 0, stdout


def test_socket_echo_cycles_report_microseconds_per_connect_echo_close() -> None:
    stdout = run_bench("socket_echo.py", "--cycles", "--messages", "30")
    figure = re.search(r"connect \+ echo \+ close, both ends: ([0-9.]+) µs", stdout)
    assert figure is not None and float(figure.group(1)) > 0, stdout


def test_socket_echo_runs_over_twisted_tcp_for_comparison() -> None:
    stdout = run_bench("socket_echo.py", "--tcp", "--messages", "200")
    assert re.search(r"round trip \(Twisted TCP\), both ends: [0-9.]+ µs", stdout), stdout
    assert "carried by: twisted.internet.tcp.Client\n" in stdout, stdout
    stdout = run_bench("socket_echo.py", "--tcp", "--cycles", "--messages", "30")
    assert re.search(r"close \(Twisted TCP\), both ends: [0-9.]+ µs", stdout), stdout
    assert "carried by: twisted.internet.tcp.Client\n" in stdout, stdout


def test_socket_echo_runs_over_mnet_by_default() -> None:
    stdout = run_bench("socket_echo.py", "--messages", "50")
    assert "carried by: mnet_twisted.transport.MNETTransport\n" in stdout, stdout
