"""
``mnet-workers``: run N copies of a server command, one per core, on one port.

    mnet-workers -n 2 --restart -- twistd -n --pidfile= mnet-echo \\
        --listen mnet:9000:reusePort=yes:secretFile=/var/lib/mnet/cookie.secret

Each copy binds the port with ``SO_REUSEPORT`` (``reusePort=yes``), and the
kernel spreads peers over them by a hash of the peer's address, so each
peer's datagrams keep reaching the process that holds its session.  A
shared ``secretFile`` lets any of them check any cookie.  ``{worker}`` in
the command is replaced by the worker's number (1..N), which is also in the
environment as ``MNET_WORKER``: ``--logfile=/var/log/mnet/{worker}.log``.

SIGTERM, SIGINT and SIGHUP are passed on to every worker; the launcher exits
when all have, with the first non-zero status among them (0 if none; dying
of the signal passed on counts as a clean end, since that is how twistd
ends after a clean shutdown).  With
``--restart`` a worker that dies on its own is started again, after a pause
that doubles (up to a minute) while it keeps dying within a minute.

This is a plain POSIX supervisor, not a Twisted program: it only starts,
waits for, and signals processes.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

__all__ = ["main"]

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: A worker that ran this long before dying is restarted without delay.
_STABLE_AFTER = 60.0
_MAX_DELAY = 60.0


@dataclass
class _Worker:
    number: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = 0.0
    restart_at: float | None = None


def _unblock_signals() -> None:
    # The launcher blocks the signals it waits for; its children must not inherit that.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


class _Supervisor:
    def __init__(self, command: list[str], count: int, restart: bool) -> None:
        self.command = command
        self.restart = restart
        self.workers = [_Worker(number) for number in range(1, count + 1)]
        self.stopping = False
        #: The signal we stopped the workers with: dying of it is a clean end
        #: (twistd, after a clean shutdown, re-raises the signal it got).
        self.stop_signal: int | None = None
        self.status = 0

    def start(self, worker: _Worker) -> None:
        argv = [part.replace("{worker}", str(worker.number)) for part in self.command]
        env = dict(os.environ, MNET_WORKER=str(worker.number))
        worker.process = subprocess.Popen(argv, env=env, preexec_fn=_unblock_signals)
        worker.started = time.monotonic()
        worker.restart_at = None
        _say(f"worker {worker.number} started (pid {worker.process.pid})")

    def forward(self, signum: int) -> None:
        if signum != signal.SIGHUP:
            self.stopping, self.stop_signal = True, signum
        for worker in self.workers:
            if worker.process is not None:
                worker.process.send_signal(signum)
            if self.stopping:
                worker.restart_at = None

    def reap(self) -> None:
        for worker in self.workers:
            process = worker.process
            if process is None or process.poll() is None:
                continue
            worker.process = None
            code = process.returncode
            if code < 0:
                ended = f"ended by {signal.Signals(-code).name}"
            else:
                ended = f"exited with status {code}"
            _say(f"worker {worker.number} (pid {process.pid}) {ended}")
            if self.restart and not self.stopping:
                ran = time.monotonic() - worker.started
                worker.delay = (
                    0.0 if ran >= _STABLE_AFTER else min(_MAX_DELAY, max(1.0, worker.delay * 2))
                )
                worker.restart_at = time.monotonic() + worker.delay
            elif code and code != -(self.stop_signal or 0) and not self.status:
                # How the group ended: a restarted worker's death is not.
                self.status = code if code > 0 else 128 - code

    def run(self) -> int:
        waited = {*_FORWARDED, signal.SIGCHLD}
        # A blocked signal is queued for sigwaitinfo; a handler (even one
        # doing nothing) makes sure SIGCHLD is not discarded as ignored.
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.pthread_sigmask(signal.SIG_BLOCK, waited)
        for worker in self.workers:
            try:
                self.start(worker)
            except OSError:
                self.forward(signal.SIGTERM)  # no half-started group left behind
                for started in self.workers:
                    if started.process is not None:
                        started.process.wait()
                raise
        while True:
            self.reap()
            now = time.monotonic()
            for worker in self.workers:
                if worker.restart_at is not None and worker.restart_at <= now:
                    try:
                        self.start(worker)
                    except OSError as error:
                        _say(f"cannot restart worker {worker.number}: {error}")
                        worker.delay = min(_MAX_DELAY, max(1.0, worker.delay * 2))
                        worker.restart_at = now + worker.delay
            pending = [w.restart_at for w in self.workers if w.restart_at is not None]
            if not pending and all(w.process is None for w in self.workers):
                return self.status
            timeout = max(0.0, min(pending) - now) if pending else None
            if timeout is None:
                info = signal.sigwaitinfo(waited)
            else:
                info = signal.sigtimedwait(waited, timeout)
            if info is not None and info.si_signo in _FORWARDED:
                self.forward(info.si_signo)


def _say(message: str) -> None:
    print(f"mnet-workers: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mnet-workers",
        description=(
            "Run N copies of a server command (e.g. twistd mnet-echo with "
            "--listen mnet:PORT:reusePort=yes:secretFile=PATH) so that they "
            "share one UDP port; {worker} in the command becomes 1..N."
        ),
    )
    parser.add_argument(
        "-n",
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="how many copies (default: one per core)",
    )
    parser.add_argument("--restart", action="store_true", help="start a worker again when it dies")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    options = parser.parse_args(argv)
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not command:
        parser.error("give the command to run after --")
    if options.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        return _Supervisor(command, options.workers, options.restart).run()
    except OSError as error:
        _say(f"cannot start {command[0]!r}: {error}")
        return 127


if __name__ == "__main__":
    sys.exit(main())
