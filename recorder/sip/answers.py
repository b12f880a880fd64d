"""The answers the SIP core builds (RFC 3261 §8.2.6) and where they go (§18.2.2, RFC 3581)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from recorder.sip.message import Headers, SipRequest, SipResponse, full_name, header_params
from recorder.sip.reasons import reason_phrase
from recorder.sip.state import Peer

__all__ = [
    "COPIED",
    "REQUEST_START",
    "answer_destination",
    "build_response",
    "contact_user",
    "warning",
]

REQUEST_START = re.compile(r"[A-Za-z]+ \S+ SIP/\d\.\d$", re.IGNORECASE)
COPIED = {"via": "Via", "from": "From", "to": "To", "call-id": "Call-ID", "cseq": "CSeq"}


def warning(host: str, problem: object) -> str:
    """A ``Warning`` value (§20.43, code 399) that tells the sender what was wrong."""
    text = str(problem).replace("\\", "").replace('"', "'")[:120]
    return f'399 {host} "{text}"'


def contact_user(user: str) -> str:
    """A user part escaped for a SIP URI (§25.1: user-unreserved and unreserved stay)."""
    return "".join(c if c.isalnum() or c in "-_.!~*'()&=+$,;?/" else f"%{ord(c):02X}" for c in user)


def answer_destination(
    host: str, port: int | None, params: dict[str, str | None], peer: Peer
) -> tuple[Peer, str | None]:
    """§18.2.2 and RFC 3581: where the answers go, and the parameters the top Via gains.

    Over TCP, the same connection. Over UDP, the source address, and the source port
    when the client asked for it (``rport``), else the port its Via names (5060 when none).
    """
    marks: str | None = None
    if "rport" in params or host.strip("[]") != peer.host:
        marks = f";received={peer.host}" + (f";rport={peer.port}" if "rport" in params else "")
    if peer.transport != "udp":
        return peer, marks
    answer_port = peer.port if "rport" in params else (port or 5060)
    return Peer("udp", peer.host, answer_port), marks


def _marked(via: str, marks: str) -> str:
    """The first value of a Via field without its ``received``/``rport``, then ``marks``."""
    first, comma, others = via.partition(",")
    kept = [p for p in first.split(";") if p.split("=", 1)[0].strip().lower() not in _MARKS]
    return ";".join(kept).rstrip() + marks + (comma + others if comma else "")


_MARKS = ("received", "rport")


def build_response(
    request: SipRequest,
    status: int,
    reason: str | None,
    local_tag: str | None,
    extra: Sequence[tuple[str, str]],
    body: bytes,
    marks: str | None,
) -> SipResponse:
    """§8.2.6.2: the answer copies Via, From, Call-ID and CSeq, and To with our tag."""
    headers = Headers()
    first_via = True
    for name, value in request.headers:
        key = full_name(name)
        if key not in COPIED:
            continue
        if key == "via" and first_via:
            first_via = False
            if marks is not None:
                value = _marked(value, marks)
        if key == "to" and local_tag and "tag" not in header_params(value):
            value = f"{value};tag={local_tag}"
        headers.add(COPIED[key], value)
    for name, value in extra:
        headers.add(name, value)
    headers.add("Content-Length", str(len(body)))
    return SipResponse(status, reason or reason_phrase(status), headers, body)
