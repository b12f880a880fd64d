"""Identifiers that sort by creation time (for stable list cursors) and leak nothing."""

from __future__ import annotations

import os
from datetime import datetime

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def new_id(prefix: str, now: datetime) -> str:
    """``{prefix}_`` + 26 base32 characters: 48-bit milliseconds then 80 random bits."""
    value = (int(now.timestamp() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(reversed(chars))}"
