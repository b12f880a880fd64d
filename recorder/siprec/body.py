"""A SIPREC request body split into its SDP offer and its recording metadata (RFC 7866 §9).

A recording client sends ``multipart/mixed`` (RFC 2046 §5.1) with an ``application/sdp``
part and an ``application/rs-metadata+xml`` part; a forked leg or a plain call sends the
SDP alone; a metadata-only ``UPDATE`` sends the metadata alone. Real clients quote the
boundary or not, end lines with LF alone, forget the closing delimiter, add parts of their
own (``application/gtd``, ``application/isup``: ignored) and write part headers in any case;
all of that is read. A body with neither SDP nor metadata, or beyond the bounds below,
raises :class:`SiprecBodyError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from recorder.siprec.sdp import UnacceptableMedia

__all__ = [
    "METADATA_TYPES",
    "RecordingOffer",
    "SiprecBodyError",
    "UnacceptableMedia",
    "split_body",
]

# Bounds: a SIPREC body is an SDP of a few hundred bytes and metadata of a few KiB;
# the limits leave room for a conference's worth of participants, no more.
MAX_BODY_BYTES = 262_144
MAX_PARTS = 16
MAX_NESTING = 2  # multipart/mixed holding one multipart/alternative, as some clients send

SDP_TYPE = "application/sdp"
METADATA_TYPES = frozenset({"application/rs-metadata+xml", "application/rs-metadata"})


_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


class SiprecBodyError(ValueError):
    """A body that carries no offer and no metadata, or is malformed (answered ``400``)."""


@dataclass
class RecordingOffer:
    """What a body carries: the SDP (None in a metadata-only update) and the raw metadata."""

    sdp: str | None
    metadata: bytes | None


def split_body(
    content_type: str | None, body: bytes, *, require_sdp: bool = False
) -> RecordingOffer:
    """Split ``body`` by its ``Content-Type``; with ``require_sdp``, a body without SDP fails.

    Without ``require_sdp`` a body holding metadata alone is a metadata-only update and
    comes back with ``sdp=None``; a body holding neither always fails.
    """
    if len(body) > MAX_BODY_BYTES:
        raise SiprecBodyError(f"body larger than {MAX_BODY_BYTES} bytes")
    sdp: bytes | None = None
    metadata: bytes | None = None
    for part_type, content in _parts(content_type, body, depth=0):
        if not content.strip():
            continue
        if part_type == SDP_TYPE and sdp is None:
            sdp = content
        elif part_type in METADATA_TYPES and metadata is None:
            metadata = content
    if sdp is None and (require_sdp or metadata is None):
        raise SiprecBodyError("the body has no application/sdp part")
    return RecordingOffer(sdp=None if sdp is None else _text(sdp), metadata=metadata)


def _text(sdp: bytes) -> str:
    # RFC 4566 §5: UTF-8 by default; a client that writes Latin-1 in s= still gets read.
    try:
        return sdp.decode("utf-8")
    except UnicodeDecodeError:
        return sdp.decode("latin-1")


def _parts(content_type: str | None, body: bytes, *, depth: int) -> list[tuple[str, bytes]]:
    media_type, params = _media_type(content_type or "")
    if not media_type:
        media_type = _sniff(body)
    if not media_type.startswith("multipart/"):
        return [(media_type, body)]
    if depth >= MAX_NESTING:
        raise SiprecBodyError("multipart nested too deep")
    boundary = params.get("boundary") or _guess_boundary(body)
    if not boundary:
        raise SiprecBodyError("multipart body without a boundary")
    found: list[tuple[str, bytes]] = []
    for part in _split_multipart(body, boundary):
        headers, content = _part_headers(part)
        part_type = headers.get("content-type")
        if part_type is None:
            found.append((_sniff(content), content))
        else:
            found.extend(_parts(part_type, content, depth=depth + 1))
    return found


def _sniff(content: bytes) -> str:
    # A part (or body) without Content-Type: RFC 2046 says text/plain; a client that forgot
    # the header still meant its SDP or its metadata.
    head = content.lstrip()[:64]
    if head.startswith(b"v=0"):
        return SDP_TYPE
    if head.startswith(b"<"):
        return "application/rs-metadata+xml"
    return "text/plain"


def _media_type(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype`` in lower case and the parameters (names lower case, quotes removed)."""
    pieces = _split_params(value)
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        name, sep, raw = piece.partition("=")
        if not sep:
            continue
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1].replace('\\"', '"')
        params[name.strip().lower()] = raw
    return pieces[0].strip().lower(), params


def _split_params(value: str) -> list[str]:
    # Split on ';' outside double quotes: a quoted boundary may hold one.
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == ";" and not quoted:
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
    pieces.append("".join(current))
    return pieces


def _guess_boundary(body: bytes) -> str | None:
    # A Content-Type without its boundary parameter: the first delimiter line names it.
    for line in body.lstrip().splitlines()[:1]:
        if line.startswith(b"--") and len(line.strip()) > 2:
            return line.strip()[2:].decode("latin-1")
    return None


def _split_multipart(body: bytes, boundary: str) -> list[bytes]:
    """The parts between delimiter lines (RFC 2046 §5.1.1), without preamble and epilogue.

    The line end before a delimiter belongs to it. A missing closing delimiter ends the last
    part at the end of the body; a body with no delimiter at all is an error.
    """
    if not 1 <= len(boundary) <= 200:
        raise SiprecBodyError("bad multipart boundary")
    marker = re.escape(boundary.encode("latin-1", "replace"))
    delimiter = re.compile(rb"(?:\A|\r?\n)--" + marker + rb"(--)?[ \t]*(?=\r?\n|\Z)")
    matches = list(delimiter.finditer(body))
    if not matches:
        raise SiprecBodyError("multipart body without its boundary")
    parts: list[bytes] = []
    for current, following in zip(matches, [*matches[1:], None], strict=True):
        if current.group(1):  # the closing delimiter: what follows is epilogue
            break
        end = following.start() if following is not None else len(body)
        if len(parts) >= MAX_PARTS:
            raise SiprecBodyError(f"more than {MAX_PARTS} body parts")
        part = body[current.end() : end]
        parts.append(part[2:] if part.startswith(b"\r\n") else part[1:])
    return parts


def _part_headers(part: bytes) -> tuple[dict[str, str], bytes]:
    """A part's headers (names in lower case, folded lines joined) and its content."""
    if part.startswith((b"\r\n", b"\n")):  # no headers at all
        return {}, part[2:] if part.startswith(b"\r\n") else part[1:]
    found = re.search(rb"\r?\n\r?\n", part)
    if found is None:
        head, content = part, b""
    else:
        head, content = part[: found.start()], part[found.end() :]
    headers: dict[str, str] = {}
    last: str | None = None
    for line in head.decode("latin-1").splitlines():
        if line[:1] in (" ", "\t") and last is not None:
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name.strip()):
            if headers:
                continue
            # No "Name:" in the first line: the part has no headers and this is content.
            return {}, part
        last = name.strip().lower()
        headers.setdefault(last, value.strip())
    return headers, content
