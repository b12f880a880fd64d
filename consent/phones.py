"""Phone numbers: normalized to E.164, then kept only as a keyed hash.

The hash key is derived from the master key, so the hashes cannot be reversed by
trying every number without it (there are only ~10^11 plausible numbers).
"""

from __future__ import annotations

import hashlib
import hmac
import re

_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_SEPARATORS = re.compile(r"[\s().-]")


def normalize_phone(text: str) -> str:
    """``+212 6-12 34 56 78`` → ``+212612345678``; ValueError if it is not E.164."""
    candidate = _SEPARATORS.sub("", text.strip())
    if candidate.startswith("00"):
        candidate = "+" + candidate[2:]
    if candidate.lower().startswith(("sip:", "tel:")):
        candidate = candidate.split(":", 1)[1].split("@", 1)[0].split(";", 1)[0]
    if not _E164.match(candidate):
        raise ValueError("not an E.164 phone number (expected +<country code><number>)")
    return candidate


def hash_phone(key: bytes, text: str) -> str:
    """Keyed hash of the normalized number: what callrec stores instead of the number."""
    return hmac.new(key, normalize_phone(text).encode(), hashlib.sha256).hexdigest()
