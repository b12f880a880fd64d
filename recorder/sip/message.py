"""SIP messages (RFC 3261 §7): bytes to requests and responses and back, with no I/O.

Recording sources are SBCs and PBXs of every make, and some are sloppy, so the parser
takes what a careful reader can still understand: bare LF line ends, header names in any
case and in their compact forms (§7.3.3), folded header lines (§7.3.1), a datagram whose
``Content-Length`` disagrees with the body it clearly carries, or none at all (§18.3 for
UDP: the body is the rest of the datagram). What it cannot understand raises
``SipParseError`` and nothing else, and every message is bounded in size and header count.

Well-formed input comes back byte for byte from ``serialize``: each header keeps the
bytes it was read from until it is changed, so a proxy's spacing and folding survive.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

__all__ = [
    "MAX_HEADERS",
    "MAX_MESSAGE",
    "CSeq",
    "Headers",
    "NameAddr",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "Via",
    "format_reason",
    "full_name",
    "header_params",
    "parse",
    "parse_cseq",
    "parse_name_addr",
    "parse_via",
    "serialize",
    "split_list",
    "uri_user",
]

# A SIPREC INVITE carries two SDP streams and a metadata document: a few KiB. 64 KiB is
# the largest UDP datagram, and more than any recording source sends over TCP either.
MAX_MESSAGE = 64 * 1024
# Real messages carry 10 to 30 headers; a few hundred only comes from a fuzzer or an attack.
MAX_HEADERS = 256

# RFC 3261 §7.3.3 and the later RFCs' registrations (IANA "Header Fields", compact form).
COMPACT = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~\-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_VERSION = re.compile(r"SIP/\d+\.\d+", re.IGNORECASE)


class SipParseError(ValueError):
    """The bytes are not a SIP message this parser can understand (the only error it raises)."""


def full_name(name: str) -> str:
    """A header name lower-cased, its compact form spelled out: ``v`` → ``via``."""
    lowered = name.lower()
    return COMPACT.get(lowered, lowered)


_key = full_name


@dataclass
class _Field:
    name: str
    value: str
    raw: bytes | None = None  # the bytes it was read from (no final line end), until changed


class Headers:
    """Ordered header fields; names match case-insensitively and by their compact forms.

    Each field is kept as its own line: two ``Via`` lines stay two, and a ``Via`` line with
    two comma-separated values stays one (``split_list`` splits it).
    """

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[_Field] = [_Field(name, value) for name, value in fields]

    def get(self, name: str) -> str | None:
        """The first field's value by that name, or None."""
        key = _key(name)
        return next((f.value for f in self._fields if _key(f.name) == key), None)

    def get_all(self, name: str) -> list[str]:
        """Every field's value by that name, in order."""
        key = _key(name)
        return [f.value for f in self._fields if _key(f.name) == key]

    def add(self, name: str, value: str) -> None:
        """Append a field."""
        self._fields.append(_Field(name, value))

    def set(self, name: str, value: str) -> None:
        """Replace the fields by that name with one, where the first one was (else at the end)."""
        key = _key(name)
        for index, existing in enumerate(self._fields):
            if _key(existing.name) == key:
                self._fields[index] = _Field(name, value)
                self._fields[index + 1 :] = [
                    f for f in self._fields[index + 1 :] if _key(f.name) != key
                ]
                return
        self._fields.append(_Field(name, value))

    def set_first(self, name: str, value: str) -> None:
        """Replace the first field by that name only (a proxy's top ``Via``); else append."""
        key = _key(name)
        for index, existing in enumerate(self._fields):
            if _key(existing.name) == key:
                self._fields[index] = _Field(existing.name, value)
                return
        self._fields.append(_Field(name, value))

    def remove(self, name: str) -> None:
        """Drop every field by that name."""
        key = _key(name)
        self._fields = [f for f in self._fields if _key(f.name) != key]

    def copy(self) -> Headers:
        copied = Headers()
        copied._fields = [_Field(f.name, f.value, f.raw) for f in self._fields]
        return copied

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((f.name, f.value) for f in self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def _encode(self) -> bytes:
        return b"".join(
            (f.raw if f.raw is not None else f"{f.name}: {f.value}".encode()) + b"\r\n"
            for f in self._fields
        )


@dataclass
class SipRequest:
    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"


@dataclass
class SipResponse:
    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"


def parse(data: bytes) -> SipRequest | SipResponse:
    """One whole message (a datagram, or a frame cut from a stream) to a request or response.

    The body is everything after the blank line; ``Content-Length`` is not used to cut it
    (a stream's framer already did, and a datagram's body is the rest of it).
    """
    if len(data) > MAX_MESSAGE:
        raise SipParseError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    # §7.5: CRLFs before the start line are ignored (keep-alives land here too).
    start = 0
    while start < len(data) and data[start] in b"\r\n":
        start += 1
    if start == len(data):
        raise SipParseError("empty message")
    lines, body = _split_head(data, start)
    first, _ = lines[0]
    message = _start_line(_decode(first))
    message.headers = _header_fields(lines[1:])
    message.body = body
    return message


def _split_head(data: bytes, start: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The head's lines (content, line end) and the body after the blank line."""
    lines: list[tuple[bytes, bytes]] = []
    position = start
    while True:
        end = data.find(b"\n", position)
        if end < 0:
            if position < len(data):
                raise SipParseError("truncated: the last header line has no end")
            return lines, b""  # no blank line and no body: taken as a head alone
        crlf = end > position and data[end - 1] == 0x0D
        content = data[position : end - 1 if crlf else end]
        position = end + 1
        if not content:
            if not lines:
                raise SipParseError("no start line")
            return lines, data[position:]
        if len(lines) > MAX_HEADERS:
            raise SipParseError(f"more than {MAX_HEADERS} header lines")
        lines.append((content, b"\r\n" if crlf else b"\n"))


def _decode(raw: bytes) -> str:
    if b"\x00" in raw:
        raise SipParseError("NUL byte in the message head")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # Older equipment writes display names in Latin-1; every byte is a character there.
        return raw.decode("latin-1")


def _start_line(line: str) -> SipRequest | SipResponse:
    parts = line.split(" ", 2)
    if len(parts) == 3 and _VERSION.fullmatch(parts[0]):
        version, code, reason = parts
        if not (len(code) == 3 and code.isdigit() and code.isascii() and 100 <= int(code) < 700):
            raise SipParseError(f"bad status code {code!r}")
        return SipResponse(int(code), reason, Headers(), b"", version)
    if len(parts) == 2 and _VERSION.fullmatch(parts[0]):
        code = parts[1]
        if len(code) == 3 and code.isdigit() and code.isascii() and 100 <= int(code) < 700:
            return SipResponse(int(code), "", Headers(), b"", parts[0])  # no reason phrase
        raise SipParseError(f"bad status code {code!r}")
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError("the start line is neither a request nor a response")
    method, uri, version = parts
    if not _TOKEN.fullmatch(method):
        raise SipParseError(f"bad method {method!r}")
    if not _VERSION.fullmatch(version):
        raise SipParseError(f"bad SIP version {version!r}")
    if not uri or ":" not in uri or any(c.isspace() or ord(c) < 0x20 for c in uri):
        raise SipParseError(f"bad Request-URI {uri!r}")
    return SipRequest(method, uri, Headers(), b"", version)


def _header_fields(lines: list[tuple[bytes, bytes]]) -> Headers:
    headers = Headers()
    fields = headers._fields
    pending: list[tuple[bytes, bytes]] = []

    def finish() -> None:
        if not pending:
            return
        text = _decode(pending[0][0])
        name, colon, value = text.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _TOKEN.fullmatch(name):
            raise SipParseError(f"bad header line {text[:40]!r}")
        # §7.3.1: a folded line continues the field; its line end and indent are one space.
        parts = [value.strip(" \t")] + [_decode(c).strip(" \t") for c, _ in pending[1:]]
        joined = " ".join(p for p in parts if p)
        if _CONTROL.search(joined):
            raise SipParseError(f"control character in header {name!r}")
        # Only a field read as CRLF lines keeps its bytes; LF-only input is re-emitted in CRLF.
        keep = all(end == b"\r\n" for _, end in pending)
        raw = b"\r\n".join(c for c, _ in pending) if keep else None
        fields.append(_Field(name, joined, raw))
        pending.clear()

    for content, end in lines:
        if content[:1] in (b" ", b"\t"):
            if not pending:
                raise SipParseError("a folded line with no header before it")
            pending.append((content, end))
            continue
        finish()
        pending.append((content, end))
    finish()
    return headers


def serialize(message: SipRequest | SipResponse) -> bytes:
    """A message to bytes: CRLF line ends; headers and body exactly as they are held.

    ``Content-Length`` is not rewritten: whoever builds a message sets it (the core does).
    """
    if isinstance(message, SipRequest):
        start = f"{message.method} {message.uri} {message.version}"
    else:
        start = f"{message.version} {message.status:03d} {message.reason}"
        if not message.reason:
            start = start.rstrip(" ")
    return start.encode() + b"\r\n" + message.headers._encode() + b"\r\n" + message.body


# --- helpers for the header values the core and the application read -----------------


def split_list(value: str) -> list[str]:
    """A comma-separated header value (§7.3.1) split outside quotes and angle brackets."""
    items: list[str] = []
    current: list[str] = []
    quoted = angled = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            angled = True
        elif not quoted and char == ">":
            angled = False
        elif char == "," and not quoted and not angled:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    items.append("".join(current).strip())
    return [item for item in items if item]


def _split_params(text: str) -> dict[str, str | None]:
    """``;a=1;b;c="x;y"`` to ``{"a": "1", "b": None, "c": "x;y"}`` (names lower-cased)."""
    params: dict[str, str | None] = {}
    for item in _split_outside_quotes(text, ";"):
        name, equals, value = item.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        params.setdefault(name, value if equals else None)
    return params


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


@dataclass(frozen=True)
class NameAddr:
    """A ``From``/``To``/``Contact`` value: display name, URI and header parameters."""

    display: str | None
    uri: str
    params: dict[str, str | None]

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


def parse_name_addr(value: str) -> NameAddr:
    """``"Alice" <sip:a@b;transport=tcp>;tag=9`` or ``sip:a@b;tag=9`` (§20.10, §20.20)."""
    value = value.strip()
    display: str | None = None
    opening = _angle_outside_quotes(value)
    if opening >= 0:
        closing = value.find(">", opening)
        if closing < 0:
            raise SipParseError(f"unclosed '<' in {value[:60]!r}")
        display = value[:opening].strip().strip('"').strip() or None
        uri = value[opening + 1 : closing].strip()
        rest = value[closing + 1 :]
    else:
        # Without angle brackets, parameters after the URI belong to the header (§20.10).
        uri, _, rest = value.partition(";")
        uri = uri.strip()
        rest = ";" + rest if rest else ""
    if not uri:
        raise SipParseError(f"no URI in {value[:60]!r}")
    return NameAddr(display, uri, _split_params(rest.strip().lstrip(";")))


def _angle_outside_quotes(value: str) -> int:
    quoted = escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "<" and not quoted:
            return index
    return -1


def header_params(value: str) -> dict[str, str | None]:
    """The parameters of a header value (``tag=``, ``branch=``, ``received``), outside ``<>``."""
    opening = _angle_outside_quotes(value)
    if opening >= 0:
        closing = value.find(">", opening)
        value = value[closing + 1 :] if closing >= 0 else ""
    _, _, rest = value.partition(";")
    return _split_params(rest)


@dataclass(frozen=True)
class CSeq:
    number: int
    method: str


def parse_cseq(value: str) -> CSeq:
    """``CSeq: 4711 INVITE`` (§20.16): the number is below 2**31."""
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or not parts[0].isascii():
        raise SipParseError(f"bad CSeq {value[:40]!r}")
    number = int(parts[0])
    if number >= 2**31 or not _TOKEN.fullmatch(parts[1]):
        raise SipParseError(f"bad CSeq {value[:40]!r}")
    return CSeq(number, parts[1].upper())


@dataclass(frozen=True)
class Via:
    """One ``Via`` value (§20.42): ``SIP/2.0/UDP host:port;branch=z9hG4bK...;rport``."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")


def parse_via(value: str) -> Via:
    """The first value of a ``Via`` field (a field may carry several, comma-separated)."""
    items = split_list(value)
    if not items:
        raise SipParseError("empty Via")
    sent, _, rest = items[0].partition(";")
    matched = _SENT_PROTOCOL.fullmatch(sent)
    if not matched:
        raise SipParseError(f"bad Via {value[:60]!r}")
    host, port = _host_port(matched[2])
    return Via(matched[1].upper(), host, port, _split_params(rest))


# §20.42: SIP / 2.0 / UDP host:port, with blanks allowed around each slash.
_SENT_PROTOCOL = re.compile(r"\s*[^\s/]+\s*/\s*[^\s/]+\s*/\s*([^\s/]+)\s+(\S.*?)\s*")


def _host_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):  # an IPv6 reference
        closing = text.find("]")
        if closing < 0:
            raise SipParseError(f"bad host {text[:60]!r}")
        host, rest = text[: closing + 1], text[closing + 1 :]
    else:
        host, colon, port_text = text.partition(":")
        rest = colon + port_text
    host = host.strip()
    if not host or any(c.isspace() for c in host):
        raise SipParseError(f"bad host {text[:60]!r}")
    if not rest:
        return host, None
    port_text = rest[1:].strip() if rest.startswith(":") else ""
    if not (port_text.isdigit() and port_text.isascii() and 0 < int(port_text) < 65536):
        raise SipParseError(f"bad port in {text[:60]!r}")
    return host, int(port_text)


def uri_user(uri: str) -> str | None:
    """The user part of a SIP or tel URI, percent-decoded, without user parameters.

    ``sip:acme@host;transport=tcp`` → ``acme``; ``<sips:+15551234567;npdi@h>`` →
    ``+15551234567``; ``tel:+15551234567;phone-context=x`` → ``+15551234567``; a URI with
    no user (``sip:host``) → None.
    """
    text = uri.strip()
    if "<" in text:
        opening = _angle_outside_quotes(text)
        if opening >= 0:
            closing = text.find(">", opening)
            text = text[opening + 1 : closing if closing >= 0 else len(text)]
    scheme, colon, rest = text.partition(":")
    scheme = scheme.strip().lower()
    if not colon:
        return None
    if scheme == "tel":
        user = rest.split(";", 1)[0]
    elif scheme in ("sip", "sips"):
        if "@" not in rest:
            return None
        user = rest.rsplit("@", 1)[0].split(":", 1)[0].split(";", 1)[0]
    else:
        return None
    user = urllib.parse.unquote(user.strip())
    return user or None


def format_reason(status: int, text: str) -> str:
    """A ``Reason`` value (RFC 3326): ``SIP;cause=403;text="no_consent"``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'SIP;cause={status};text="{escaped}"'
