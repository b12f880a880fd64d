"""What a SIPREC request says about the recorded call, read without side effects.

The call's id and parties, the one codec its streams are kept in, whether the SRC is
sending on a stream, and the caller's answer when the SRC carries it in band. Pure
functions over parsed bodies and headers, so the server only wires them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from recorder.capture.codecs import Codec, codec_named
from recorder.siprec.metadata import Metadata
from recorder.siprec.sdp import PayloadFormat, SessionDescription

__all__ = [
    "CallerConsent",
    "call_id_of",
    "caller_consent",
    "choose_formats",
    "parties_of",
]

# The call ids the HTTP call control takes (``consent.calls.CallRequest``).
_CALL_ID = re.compile(r"^[A-Za-z0-9._:@+-]{1,200}$")
_NAME_ADDR = re.compile(r"<([^>]*)>")


def call_id_of(metadata: Metadata | None, sip_call_id: str | None) -> str | None:
    """The recorded call's Session-ID (its local UUID) if usable, else the SIP Call-ID.

    RFC 7989 Session-IDs come with ``;remote=…``: the integrator's call control names the
    call by the part before it. None when neither is a call id callrec can take.
    """
    candidates = []
    if metadata is not None and metadata.session_id:
        candidates.append(metadata.session_id.split(";", 1)[0].strip())
    if sip_call_id:
        candidates.append(sip_call_id.strip())
    return next((c for c in candidates if _CALL_ID.match(c)), None)


def parties_of(
    metadata: Metadata | None, from_header: str | None, to_header: str | None
) -> tuple[str, str]:
    """The first two participants' AORs, else the INVITE's From and To (a forked leg)."""
    if metadata is not None:
        aors = [p.aors[0] for p in metadata.participants if p.aors]
        if len(aors) >= 2:
            return aors[0], aors[1]
    return _address(from_header), _address(to_header)


def _address(header: str | None) -> str:
    """``"Alice" <sip:+1555@x>;tag=1`` -> ``sip:+1555@x``."""
    if not header:
        return ""
    found = _NAME_ADDR.search(header)
    return (found.group(1) if found else header.split(";", 1)[0]).strip()


def choose_formats(
    offer: SessionDescription, order: list[int]
) -> tuple[Codec[Any], dict[int, PayloadFormat]] | None:
    """One codec for the whole call, offered on every stream; each stream's format.

    The first stream's preference decides among the codecs every stream offers; a
    recording has one codec for all its channels. None when there is no such codec.
    """
    if not order:
        return None
    if not all(offer.streams[i].rtp for i in order):
        return None
    for first in offer.streams[order[0]].formats:
        codec = codec_named(first.name)
        if codec is None:
            continue
        formats: dict[int, PayloadFormat] = {}
        for index in order:
            found = next(
                (f for f in offer.streams[index].formats if _same(f, first)),
                None,
            )
            if found is None:
                break
            formats[index] = found
        else:
            return codec, formats
    return None


def _same(a: PayloadFormat, b: PayloadFormat) -> bool:
    return a.name.lower() == b.name.lower() and a.rate == b.rate


@dataclass(frozen=True)
class CallerConsent:
    """``X-Callrec-Caller-Consent: accepted; method=dtmf; notice=v1``."""

    accepted: bool
    method: str
    notice: str


def caller_consent(header: str | None) -> CallerConsent | None:
    """The caller's answer the SRC reported, or None (absent or not understood)."""
    if not header:
        return None
    answer, *params = (part.strip() for part in header.split(";"))
    values: dict[str, str] = {}
    for param in params:
        name, _, value = param.partition("=")
        values[name.strip().lower()] = value.strip().strip('"')
    method, notice = values.get("method", ""), values.get("notice", "")
    if answer.lower() not in ("accepted", "declined") or method not in ("dtmf", "speech"):
        return None
    if not 1 <= len(notice) <= 100:
        return None
    return CallerConsent(answer.lower() == "accepted", method, notice)
