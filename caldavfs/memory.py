"""How the daemon's heap is kept small: glibc's malloc, told through ctypes (nothing elsewhere)."""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h
# Heaps for the threads of one process: glibc gives each busy thread one of its own, up to eight
# per CPU, and each keeps what a parse freed. Two keep the daemon's peak lower (a cold rsync of
# 6,000 items: 81 MB against 90, measured) at no cost in time that could be measured.
ARENAS = 2

try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None)
except OSError:  # not a system with a C library to ask
    _LIBC = None


def limit_arenas() -> None:
    """Before the mount's threads start: at most ARENAS heaps for all of them."""
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is not None and not mallopt(_M_ARENA_MAX, ARENAS):
        log.debug("mallopt(M_ARENA_MAX) refused")


def give_back() -> None:
    """Return the heap a big listing freed to the system: glibc keeps freed small blocks (the
    parsed answer's strings, tens of MB at 5,000 items) as its own, and the next listing's peak
    then comes on top of them (12 MB less at 20,000 items, measured)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)
