"""The C allocator of a long-running worker: glibc's mmap threshold fixed and its number of
malloc arenas capped at start-up, and malloc's own figures for /metrics.

Why: glibc's malloc serves a request of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB at
first) with a mapping of its own, returned to the system by ``free``. The threshold is
*dynamic*: freeing such a block raises it to that block's size (up to 32 MiB on 64-bit).
A worker's index merges free arrays of 1-12 MB (codes, ids, chunk tables) within its first
minutes, after which every array up to that size comes from the malloc arenas instead, one
per thread that allocates (request threads, the refresh thread). Freed there, they are
kept for reuse; in-use blocks between them pin the pages, so the arenas grow with the mix
of sizes instead of staying at what is in use. Measured in the soak (BENCHMARKS.md, issue
12, soak, worker RSS): with the dynamic threshold a worker's arenas held 45-68 MB and grew
at times over the run (``malloc_stats``: 144 MB taken from the system, 76 MB in use; one
thread's arena 46 MB with 0.2 MB in use); with the threshold fixed they stayed at 8-22 MB.

``mallopt(M_MMAP_THRESHOLD, n)`` (glibc manual, "Malloc Tunable Parameters"; mallopt(3))
fixes the threshold and turns the dynamic adjustment off (also of the trim threshold), so
big arrays are mapped and unmapped whatever was freed before. The cost is a mapping, page
faults and zeroed pages per big array, small beside what is done with an array that big.
On a C library other than glibc nothing is changed.

Arenas: glibc gives each thread that allocates its own arena, up to 8 per core (mallopt(3),
``M_ARENA_MAX``). A worker's request threads come and go (the web framework's thread pool), and
each arena keeps the free blocks its threads left, so small allocations spread over more arenas
than there are cores and each holds its own free memory. ``mallopt(M_ARENA_MAX, n)`` caps the
number of arenas created from then on (call it before the worker starts threads); threads then
share them. Measured in the soak (BENCHMARKS.md, issue 12, soak, worker RSS: the arenas crept
+1.6-2.3 MB over 7 minutes with the default, not with 2).
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger("hashwatch.service")

M_MMAP_THRESHOLD = -3  # <malloc.h>
M_ARENA_MAX = -8  # <malloc.h>
DEFAULT_MMAP_THRESHOLD = 128 * 1024  # glibc's initial value, here kept fixed

_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
           "uordblks", "fordblks", "keepcost")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS]  # struct mallinfo2, glibc 2.33+


def _glibc() -> ctypes.CDLL | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)  # the C library this process already runs on
    except OSError:  # pragma: no cover - a static or unusual build
        return None


def set_mmap_threshold(nbytes: int) -> bool:
    """Fix glibc's mmap threshold at ``nbytes`` (> 0) for the rest of this process: blocks of
    at least that many bytes are mapped on their own and unmapped when freed. Returns False
    (and changes nothing) when the C library is not glibc or refuses the value (glibc
    accepts at most 32 MiB on 64-bit). Raises ValueError for ``nbytes`` <= 0."""
    if nbytes <= 0:
        raise ValueError(f"mmap threshold must be > 0 bytes, got {nbytes}")
    return _mallopt(M_MMAP_THRESHOLD, nbytes)


def set_arena_max(n: int) -> bool:
    """Cap glibc's malloc arenas at ``n`` (> 0) for arenas created from now on. Returns False
    (and changes nothing) when the C library is not glibc or refuses the value. Raises
    ValueError for ``n`` <= 0."""
    if n <= 0:
        raise ValueError(f"arena maximum must be > 0, got {n}")
    return _mallopt(M_ARENA_MAX, n)


def _mallopt(param: int, value: int) -> bool:
    """glibc's ``mallopt(param, value)``: False when not on glibc or when it refuses."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)))


def arena_count() -> int | None:
    """How many malloc arenas this process has (glibc ``malloc_info``: its ``<heap>``
    elements), None when not on glibc."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "malloc_info") or not hasattr(libc, "open_memstream"):
        return None
    buf, size = ctypes.c_char_p(), ctypes.c_size_t()
    libc.open_memstream.restype = ctypes.c_void_p
    fp = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
    if not fp:
        return None
    try:
        libc.malloc_info(0, ctypes.c_void_p(fp))
    finally:
        libc.fclose(ctypes.c_void_p(fp))
    try:
        return (ctypes.string_at(buf, size.value) if buf else b"").count(b"<heap nr=")
    finally:
        libc.free(buf)


def malloc_figures() -> dict[str, int] | None:
    """This process's malloc figures in bytes (glibc ``mallinfo2``): ``arena_bytes`` (taken
    from the system by the arenas, all threads' together), ``arena_free_bytes`` (of those,
    free: kept by malloc for reuse), ``in_use_bytes`` (allocated from the arenas) and
    ``mmapped_bytes`` (blocks mapped on their own). None when not on glibc 2.33+."""
    libc = _glibc()
    fn = getattr(libc, "mallinfo2", None) if libc is not None else None
    if fn is None:
        return None
    fn.restype = _Mallinfo2
    m = fn()
    return {"arena_bytes": int(m.arena), "arena_free_bytes": int(m.fordblks),
            "in_use_bytes": int(m.uordblks), "mmapped_bytes": int(m.hblkhd)}


def tune_allocator(mmap_threshold: int, arena_max: int = 0) -> bool:
    """What a worker does at start-up: fix the mmap threshold at ``mmap_threshold`` bytes
    (0: leave glibc's dynamic threshold) and cap the malloc arenas at ``arena_max`` (0:
    glibc's default, 8 per core); nothing is done on another C library. Returns whether the
    threshold was applied; logs a warning when glibc refused a value."""
    if _glibc() is None:  # another C library: its own policy
        return False
    if arena_max > 0 and not set_arena_max(arena_max):
        log.warning("glibc refused the malloc arena maximum %d", arena_max)
    if mmap_threshold <= 0:
        return False
    ok = set_mmap_threshold(mmap_threshold)
    if not ok:
        log.warning("glibc refused the malloc mmap threshold %d bytes (at most 32 MiB)",
                    mmap_threshold)
    return ok
