"""
Which objects keep CPython's memory arenas from going back after a wave.

CPython keeps small objects (512 bytes or less) in 16 KiB pools inside
1 MiB arenas, and gives an arena back only once every block in it is
free.  After a wave of sessions closes, a few objects made during the wave
and still alive keep whole arenas resident; ``gc`` cannot list all of
them, because many are not containers (strings, numbers) or are held only
from C (the type attribute cache, ``abc``'s caches).  This walks the
pools themselves instead, in the process being examined::

    survivors = ArenaSurvivors()      # before the wave
    ...                               # the wave comes and goes
    report = survivors.report()       # every live block in pools made since

``report()`` lists each live block in a pool that was not in use at the
snapshot, with its arena, size class, and, where the block holds an
object, its type, a short ``repr`` for plain values, and what holds it.
Blocks that hold no object are buffers (a list's items, a dict's table);
dead objects kept for reuse on an interpreter free list are named so.
``bench/scale_sessions.py --survivors`` prints its summary for the
listener.

It reads CPython's pool headers (``Objects/obmalloc.c``: the header's
layout, 16 KiB pools, 16-byte size classes), found by scanning the
process's anonymous memory (``/proc/self/maps``), so it runs only on
64-bit Linux CPython 3.10 to 3.13 with its own allocator (not under
``PYTHONMALLOC=malloc``); ``available()`` says whether it can, and
``ArenaSurvivors`` checks the layout against an object of its own.  A
diagnostic, not for production: it reads raw memory, and all its own
bookkeeping lives in arrays large enough to sit outside the pools it scans.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import platform
import sys
from array import array
from bisect import bisect_left
from collections import Counter
from typing import Any

__all__ = ["ArenaSurvivors", "available"]

POOL_SIZE = 16 * 1024
_POOL_HEADER = 48
_ALIGNMENT = 16
_SIZE_CLASSES = 512 // _ALIGNMENT
# struct pool_header: ref.count at 0, freeblock at 8, arenaindex at 32,
# szidx at 36, nextoffset at 40, maxnextoffset at 44.
_COUNT, _FREEBLOCK, _ARENA, _SIZE_INDEX, _NEXT, _MAX_NEXT = 0, 8, 32, 36, 40, 44
_HAVE_GC = 1 << 14
# Objects of these types have two more words before their header: 3.11 on
# (a managed __dict__), 3.12 on (or a managed weak reference list).
_MANAGED_DICT, _MANAGED_WEAKREF = 1 << 4, 1 << 3
_FREED = "(freed)"
#: Types whose ``repr`` is plain data, safe and short to show.
_PLAIN = (int, float, str, bytes, complex, bool)


def available() -> tuple[bool, str]:
    """Whether this interpreter's pools can be walked here, and why not."""
    if not sys.platform.startswith("linux"):
        return False, "needs /proc/self/maps (Linux)"
    version = sys.version_info[:2]
    if platform.python_implementation() != "CPython" or not (3, 10) <= version <= (3, 13):
        return False, "needs CPython 3.10 to 3.13 (its pool layout)"
    if sys.maxsize < 2**32:
        return False, "needs a 64-bit build"
    if sys.getallocatedblocks() == 0:
        return False, "CPython's own allocator is off (PYTHONMALLOC)"
    return True, ""


def _u32(address: int) -> int:
    return ctypes.c_uint32.from_address(address).value


def _u64(address: int) -> int:
    return ctypes.c_uint64.from_address(address).value


def _anonymous_ranges() -> list[tuple[int, int]]:
    ranges = []
    with open("/proc/self/maps", "rb") as maps:
        for line in maps:
            fields = line.split()
            if fields[1] != b"rw-p" or (len(fields) > 5 and fields[5] != b"[heap]"):
                continue
            low, high = fields[0].split(b"-")
            ranges.append((int(low, 16), int(high, 16)))
    return ranges


def _is_pool(address: int) -> bool:
    size_index = _u32(address + _SIZE_INDEX)
    if size_index >= _SIZE_CLASSES:
        return False
    size = (size_index + 1) * _ALIGNMENT
    if _u32(address + _MAX_NEXT) != POOL_SIZE - size:
        return False
    next_offset = _u32(address + _NEXT)
    free = _u64(address + _FREEBLOCK)
    return (
        _POOL_HEADER <= next_offset <= POOL_SIZE
        and _u32(address + _COUNT) <= (POOL_SIZE - _POOL_HEADER) // size
        and (free == 0 or address <= free < address + POOL_SIZE)
    )


def _used_pools(into: array[int]) -> None:
    """Append the address of every pool with a live block to ``into``."""
    for low, high in _anonymous_ranges():
        address = (low + POOL_SIZE - 1) & ~(POOL_SIZE - 1)
        while address + POOL_SIZE <= high:
            if _is_pool(address) and _u32(address + _COUNT):
                into.append(address)
            address += POOL_SIZE


class ArenaSurvivors:
    """A snapshot of the pools in use; ``report()`` tells what lives in pools used since."""

    def __init__(self) -> None:
        usable, why = available()
        if not usable:
            raise RuntimeError(f"arena survivors: {why}")
        gc.collect()
        before: array[int] = array("Q")
        _used_pools(before)
        self._before = array("Q", sorted(before))
        self._check_layout()

    def _check_layout(self) -> None:
        probe = 10**30 + id(self)  # an int of its own, made now
        pool = id(probe) & ~(POOL_SIZE - 1)
        size = (_u32(pool + _SIZE_INDEX) + 1) * _ALIGNMENT
        fits = (sys.getsizeof(probe) + _ALIGNMENT - 1) // _ALIGNMENT * _ALIGNMENT
        if not _is_pool(pool) or size != fits:
            raise RuntimeError("arena survivors: this interpreter's pools are laid out otherwise")

    def _was_used(self, pool: int) -> bool:
        index = bisect_left(self._before, pool)
        return index < len(self._before) and self._before[index] == pool

    def _live_blocks(self) -> tuple[array[int], array[int], array[int]]:
        """Live blocks of pools used since the snapshot: addresses, sizes, arenas."""
        pools, blocks, sizes, arenas = (array("Q") for _ in range(4))
        _used_pools(pools)
        for pool in pools:
            if self._was_used(pool):
                continue
            size = (_u32(pool + _SIZE_INDEX) + 1) * _ALIGNMENT
            # Kept raw: a list of ints, alive while the pool is walked, would
            # itself show as live blocks.
            chain: array[int] = array("Q")
            block = _u64(pool + _FREEBLOCK)
            while block and pool <= block < pool + POOL_SIZE and len(chain) < POOL_SIZE:
                chain.append(block)
                block = _u64(block)
            free = array("Q", sorted(chain))
            del chain
            end, offset = _u32(pool + _NEXT), _POOL_HEADER
            while offset + size <= end:
                block = pool + offset
                offset += size
                at = bisect_left(free, block)
                if at < len(free) and free[at] == block:
                    continue
                blocks.append(block)
                sizes.append(size)
                arenas.append(_u32(pool + _ARENA))
        return blocks, sizes, arenas

    def report(self, *, limit: int = 200, holders: int = 60) -> dict[str, Any]:
        """What lives in pools that were not in use at the snapshot.

        ``limit`` caps the blocks listed one by one (all are counted);
        ``holders`` caps those whose holders are looked up (each look is a
        walk of every object the collector tracks).
        """
        gc.collect()
        # What the report keeps is made before the walk, so it is not in it.
        types = {id(kind): kind for kind in _all_types()}
        by_type: Counter[str] = Counter()
        by_arena: dict[int, Counter[str]] = {}
        pools: set[int] = set()
        listed: list[dict[str, Any]] = []
        blocks, sizes, arenas = self._live_blocks()
        # Walked twice: what lived only through the first walk was the walk's.
        again = array("Q", sorted(self._live_blocks()[0]))
        own = (again, blocks, sizes, arenas, types, by_type, listed, by_arena, pools)
        for index in range(len(blocks)):
            block, size, arena = blocks[index], sizes[index], arenas[index]
            at = bisect_left(again, block)
            if at == len(again) or again[at] != block:
                continue
            found, name = _object_at(block, types)
            if name is _FREED:
                continue
            if found is not None and (
                _is_one_of(found, own) or (type(found) is int and found in types)
            ):
                continue  # the walk's own
            by_type[name] += 1
            by_arena.setdefault(arena, Counter())[name] += 1
            pools.add(block & ~(POOL_SIZE - 1))
            if len(listed) < limit:
                entry: dict[str, Any] = {"arena": arena, "size": size, "type": name}
                if isinstance(found, _PLAIN):
                    entry["repr"] = repr(found)[:60]
                elif found is None:
                    words = range(0, min(size, 32), 8)
                    entry["words"] = [hex(_u64(block + word)) for word in words]
                if found is not None and len(listed) < holders:
                    entry["held_by"] = _holders(found, listed)
                listed.append(entry)
            del found
        return {
            "blocks": sum(by_type.values()),
            "pools": len(pools),
            "arenas": len(by_arena),
            "by_type": dict(by_type.most_common()),
            "by_arena": {str(arena): dict(kinds) for arena, kinds in sorted(by_arena.items())},
            "listed": listed,
        }


def _is_one_of(found: Any, objects: tuple[Any, ...]) -> bool:
    # A function of its own: a generator in ``report`` would turn ``found``
    # into a cell there, which would then show among its holders.
    for mine in objects:  # noqa: SIM110 (any() of a generator: the same)
        if found is mine:
            return True
    return False


def _all_types() -> list[type]:
    seen: dict[int, type] = {}
    stack: list[type] = [object, type]
    while stack:
        kind = stack.pop()
        if id(kind) in seen:
            continue
        seen[id(kind)] = kind
        with contextlib.suppress(TypeError):  # ``type`` itself wants an argument
            stack.extend(type.__subclasses__(kind))
    return list(seen.values())


def _header_offset(kind: type) -> int:
    """Where in its block an object of ``kind`` starts."""
    flags = kind.__flags__
    offset = 16 if flags & _HAVE_GC else 0
    managed = (_MANAGED_DICT if sys.version_info >= (3, 11) else 0) | (
        _MANAGED_WEAKREF if sys.version_info >= (3, 12) else 0
    )
    return offset + (16 if flags & managed else 0)


def _object_at(block: int, types: dict[int, type]) -> tuple[Any, str]:
    """The object a block holds and its type's name, or None and what the block is.

    A block whose header names a type fitting the block but counts no
    reference is a dead object an interpreter free list keeps for reuse.
    """
    for header in (0, 16, 32):
        kind = types.get(_u64(block + header + 8))
        if kind is None or _header_offset(kind) != header:
            continue
        references = _u64(block + header)
        if references == 0:
            return None, f"(free list) {kind.__qualname__}"
        if references < 1 << 32:
            return ctypes.cast(block + header, ctypes.py_object).value, kind.__qualname__
        if header == 0:
            # Its count overwritten by a link of the pool's free list: freed
            # since the walk (the walk's own numbers do that).
            return None, _FREED
    return None, "(no object: a buffer)"


def _holders(found: Any, listed: list[dict[str, Any]]) -> list[str]:
    names = []
    for holder in gc.get_referrers(found)[:4]:
        if holder is listed:
            continue
        if isinstance(holder, dict):
            key = "?"
            for name, value in holder.items():
                if value is found:
                    key = str(name)[:30]
                    break
            module = holder.get("__name__") if "__spec__" in holder else None
            names.append(f"module {module}[{key}]" if module else f"dict[{key}]")
        else:
            names.append(type(holder).__qualname__)
    return names
