"""Watching a live port's demultiplexer from a test or a benchmark."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class DemuxSpy:
    """Stands in for a port's ``Demultiplexer``, calling observers first.

    ``DemuxSpy(demux, handle_timers=seen)`` makes every
    ``handle_timers(now)`` call ``seen(now)`` and then the real method;
    everything else, attribute writes included, goes to the demultiplexer
    untouched.  A stand-in rather than methods shadowed on the instance:
    the compiled build (setup.py) makes ``Demultiplexer`` a native class,
    whose methods cannot be replaced per instance.
    """

    def __init__(self, demux: Any, **observers: Callable[..., object]) -> None:
        object.__setattr__(self, "_demux", demux)
        object.__setattr__(self, "_observers", observers)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._demux, name)
        observer = self._observers.get(name)
        if observer is None:
            return value

        def observed(*args: Any) -> Any:
            observer(*args)
            return value(*args)

        return observed

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._demux, name, value)

    def __len__(self) -> int:
        return len(self._demux)


def spy_on(port_protocol: Any, **observers: Callable[..., object]) -> DemuxSpy:
    """Put a ``DemuxSpy`` in ``port_protocol.demux``'s place; returns it."""
    spy = DemuxSpy(port_protocol.demux, **observers)
    port_protocol.demux = spy
    return spy
