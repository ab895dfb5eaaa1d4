"""
Where each process of a py-spy recording spent its busy time, by kind of work.

    py-spy record --subprocesses --format raw -o bulk.raw -- \\
        .venv/bin/python bench/suite.py --no-quic --only bulk --rounds 1 --bulk-mib 512
    .venv/bin/python tools/pyspy_summary.py bulk.raw [--match "send --proto mnet"]

``--format raw`` writes one line per distinct stack: the frames from the
root, separated by ``;``, then the number of samples.  With
``--subprocesses`` the first frames name the process and its parents
(``process PID:"its command line"``).  Only samples taken inside the reactor's loop count (the
imports and set-up before it are left out), and each is charged to the
innermost frame:

- **system calls**: the frame that makes one: MNET's port sending and
  reading (``writeDatagram``, ``_sendSegmented``, ``_readCoalesced``) and
  the reactor's ``doPoll`` (its ``epoll_wait``);
- **benchmark**: the benchmark peer's own code (hashing every byte,
  producing the stream);
- **mnet_twisted**: the rest of MNET's Python;
- **Twisted and other**: everything else.

For each process whose command line contains ``--match`` (all, without
it), prints those shares and MNET's busiest functions.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from dataclasses import dataclass, field

SYSTEM_CALL_FRAMES = ("writeDatagram", "_sendSegmented", "_readCoalesced (", "doPoll")
KINDS = ("system calls", "benchmark", "mnet_twisted", "Twisted and other")
_PROCESS = re.compile(r'^process (\d+):"(.*)"$')


@dataclass
class Profile:
    command: str
    samples: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    functions: Counter[str] = field(default_factory=Counter)


def kind_of(frame: str) -> str:
    if any(name in frame for name in SYSTEM_CALL_FRAMES):
        return "system calls"
    if "bench/" in frame or "_peer" in frame:
        return "benchmark"
    if "mnet_twisted/" in frame:
        return "mnet_twisted"
    return "Twisted and other"


def function_of(frame: str) -> str:
    """``Name (path/file.py:line)`` as ``Name file.py``."""
    name, _, where = frame.partition(" (")
    return f"{name} {where.rsplit('/', 1)[-1].split(':')[0]}"


def summarize(lines: list[str]) -> dict[str, Profile]:
    profiles: dict[str, Profile] = {}
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        # The innermost process frame: a child's stack starts with its parents'.
        process = None
        for frame in frames:
            found = _PROCESS.match(frame)
            if found is None:
                break
            process = found
        if process is None:
            continue
        in_loop = any("mainLoop" in f for f in frames)
        if not in_loop or any("importlib" in f for f in frames):
            continue
        pid, command = process.groups()
        profile = profiles.setdefault(pid, Profile(command))
        samples = int(count)
        kind = kind_of(frames[-1])
        profile.samples += samples
        profile.kinds[kind] += samples
        if kind == "mnet_twisted":
            profile.functions[function_of(frames[-1])] += samples
    return profiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", help="a py-spy recording in --format raw")
    parser.add_argument("--match", default="", help="only processes whose command has this")
    parser.add_argument("--top", type=int, default=6, help="MNET functions to list")
    options = parser.parse_args()
    with open(options.raw, encoding="utf-8") as raw:
        profiles = summarize(raw.readlines())
    for pid, profile in profiles.items():
        if options.match not in profile.command or not profile.samples:
            continue
        print(f"process {pid}: {profile.command}")
        print(f"  {profile.samples} samples in the reactor's loop")
        for kind in KINDS:
            print(f"  {profile.kinds[kind] / profile.samples:6.1%} {kind}")
        top = ", ".join(
            f"{name} {samples / profile.samples:.1%}"
            for name, samples in profile.functions.most_common(options.top)
        )
        print(f"  busiest in mnet_twisted (own time): {top}")


if __name__ == "__main__":
    main()
