"""Keeping a role's resident memory near what it uses (glibc malloc only).

Two properties of glibc's allocator made the controller's RSS grow well past its live data:

- every thread that allocates gets its own arena (up to 8 per core), and the status writes
  and Events run in a thread pool: each arena keeps its own freed memory;
- freed memory inside an arena is returned to the system only at its top, so a tick's
  temporaries (query answers, statuses, numpy arrays) leave holes that stay resident.

``limit_arenas``, which every role calls at start-up, caps the arenas (what
``MALLOC_ARENA_MAX`` does, which the image also sets; an explicit ``MALLOC_ARENA_MAX`` wins), and
``Trimmer`` hands freed pages back after the controller's ticks with ``malloc_trim``. Elsewhere
(musl, macOS) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger("slogate.memory")

M_ARENA_MAX = -8  # mallopt parameter (malloc.h)
DEFAULT_ARENAS = 2


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return libc


_LIBC = _libc()


def limit_arenas(arenas: int = DEFAULT_ARENAS) -> bool:
    """Cap malloc arenas unless ``MALLOC_ARENA_MAX`` is set; call before threads start."""
    if _LIBC is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    return bool(_LIBC.mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """Return free heap pages to the system; True when some were."""
    return _LIBC is not None and bool(_LIBC.malloc_trim(0))


class Trimmer:
    """``malloc_trim`` after work, at most every ``min_interval_s`` (it walks the heap:
    milliseconds at a few hundred MB)."""

    def __init__(
        self,
        min_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.last = -float("inf")

    def __call__(self) -> None:
        now = self.clock()
        if now - self.last < self.min_interval_s:
            return
        self.last = now
        trim()
