"""File and directory names from hrefs: sanitised, unique, deterministic.

A name is the percent-decoded last segment of the href, made safe (valid UTF-8, no ``/``,
NUL or control characters, not hidden, at most 255 bytes) with ``.ics`` appended to items
that lack it. Names that collide get a short hash of their href, so the result depends
only on the set of hrefs, never on the order a server lists them in. The tree keeps the
resulting table; nothing else derives names.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Mapping

MAX_NAME_BYTES = 255
ITEM_SUFFIX = ".ics"
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


def _digest(key: str, length: int = 8) -> str:
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:length]


def _fit(stem: str, suffix: str) -> str:
    """Truncate ``stem`` on a character boundary so that stem + suffix fits in 255 bytes."""
    room = MAX_NAME_BYTES - len(suffix.encode())
    encoded = stem.encode("utf-8")
    if len(encoded) <= room:
        return stem + suffix
    return encoded[:room].decode("utf-8", "ignore") + suffix


def sanitize(raw: str, *, item: bool) -> str:
    """A safe name for the decoded last href segment ``raw`` (``item``: a calendar object)."""
    # Invalid UTF-8 arrives as surrogates (surrogateescape); show it as U+FFFD.
    text = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = _UNSAFE.sub("_", text)
    if text.startswith("."):
        # Dotfiles are local scratch in the write path, and "." / ".." are not names.
        text = "_" + text[1:]
    suffix = ITEM_SUFFIX if item else ""
    stem = text[: -len(ITEM_SUFFIX)] if item and text.endswith(ITEM_SUFFIX) else text
    if not stem:
        stem = "_"
    name = _fit(stem, suffix)
    if len(name.encode()) < len((stem + suffix).encode()):
        # Truncated: keep it apart from other long names with the same beginning.
        name = _fit(stem, f"~{_digest(raw)}{suffix}")
    return name


def assign(raw_by_key: Mapping[str, str], *, item: bool) -> dict[str, str]:
    """Unique names for every key (canonical href) from its decoded last segment."""
    wanted = {key: sanitize(raw, item=item) for key, raw in raw_by_key.items()}
    groups: dict[str, list[str]] = defaultdict(list)
    for key, name in wanted.items():
        groups[name].append(key)
    result: dict[str, str] = {}
    for name, keys in groups.items():
        if len(keys) == 1:
            result[keys[0]] = name
            continue
        suffix = ITEM_SUFFIX if item else ""
        stem = name[: -len(suffix)] if suffix else name
        exact = [k for k in keys if raw_by_key[k] == name]
        for key in sorted(keys):
            if len(exact) == 1 and key == exact[0]:
                result[key] = name  # the one whose name needed no change keeps it
            else:
                result[key] = _fit(stem, f"~{_digest(key)}{suffix}")
    # A hashed name could in theory meet a real one; make the table injective whatever happens.
    taken: dict[str, str] = {}
    for key in sorted(result):
        name = result[key]
        if name in taken:
            suffix = ITEM_SUFFIX if item else ""
            stem = name[: -len(suffix)] if suffix else name
            name = _fit(stem, f"~{_digest(key, 16)}{suffix}")
            result[key] = name
        taken[name] = key
    return result
