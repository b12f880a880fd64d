"""SDP offers from a recording client and the ``recvonly`` answers to them (RFC 4566, 3264).

The parser is lenient where real SBCs are sloppy (LF-only line ends, trailing spaces, static
payload types without ``a=rtpmap``, unknown lines) and strict where a wrong guess would lose
audio: a line that is not ``<letter>=<value>``, an ``m=`` line without a numeric port, or
more streams or formats than any recording client sends raise :class:`SdpError`.

Addresses are recorded as written: a hold (``c=IN IP4 0.0.0.0``) gives ``address ==
"0.0.0.0"``; :attr:`MediaStream.sending` tells whether the client is sending media at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_FORMATS",
    "MediaStream",
    "PayloadFormat",
    "SdpError",
    "SessionDescription",
    "UnacceptableMedia",
    "answer_sdp",
    "choose_format",
    "choose_formats",
    "parse_sdp",
]

# Bounds: a SIPREC offer has two audio streams (maybe video, maybe a few more for a
# conference); an SDP of more than 64 KiB or with hundreds of streams is not an offer.
MAX_SDP_CHARS = 65_536
MAX_STREAMS = 32
MAX_FORMATS = 64

DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
# What the capture takes, in the order we prefer when the offer does not say (RFC 3551 names).
DEFAULT_FORMATS: tuple[str, ...] = ("PCMU", "PCMA", "G722", "opus")
HOLD_ADDRESSES = frozenset({"0.0.0.0", "::"})  # noqa: S104 - an SDP hold, not a bind
TELEPHONE_EVENT = "telephone-event"
PLAIN_RTP = frozenset({"RTP/AVP", "RTP/AVPF"})

# RFC 3551 §6, table 4: static payload types an offer may list without an a=rtpmap.
_STATIC: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),  # RFC 3551 §4.5.2: the RTP clock is 8000 although audio is 16 kHz
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
}


class SdpError(ValueError):
    """An SDP that cannot be read as an offer (answered ``400``)."""


class UnacceptableMedia(ValueError):
    """No audio stream offers a format the capture takes (answered ``488``)."""


@dataclass
class PayloadFormat:
    """One RTP payload format of a stream: ``a=rtpmap`` (or the static table) and ``a=fmtp``."""

    pt: int
    name: str
    rate: int
    channels: int = 1
    fmtp: str | None = None


@dataclass
class MediaStream:
    """One ``m=`` line with the attributes that apply to it (media level over session level)."""

    index: int
    media: str
    port: int
    address: str | None
    proto: str
    formats: list[PayloadFormat]
    label: str | None
    direction: str
    ptime: int | None = None
    # The format column as written: echoed in a rejected stream's m= line (RFC 3264 §6).
    format_tokens: list[str] = field(default_factory=list)

    @property
    def rtp(self) -> bool:
        """An RTP stream (``RTP/AVP``, ``RTP/SAVP``, ``RTP/AVPF`` …) whose formats are PTs."""
        return self.proto.upper().startswith("RTP/")

    @property
    def sending(self) -> bool:
        """Whether the offerer sends media on this stream (not rejected, held or inactive)."""
        return (
            self.port != 0
            and self.direction in ("sendrecv", "sendonly")
            and self.address not in HOLD_ADDRESSES
        )


@dataclass
class SessionDescription:
    """A parsed offer: its streams in ``m=`` order, the session-level address, ``o=``."""

    streams: list[MediaStream]
    address: str | None
    origin: str


def parse_sdp(text: str) -> SessionDescription:
    """Parse an offer; :class:`SdpError` if it is not one."""
    if len(text) > MAX_SDP_CHARS:
        raise SdpError(f"SDP larger than {MAX_SDP_CHARS} characters")
    lines = [line.strip() for line in text.lstrip("\ufeff").splitlines()]
    lines = [line for line in lines if line]
    if not lines or lines[0] != "v=0":
        raise SdpError("SDP does not start with v=0")
    origin = ""
    session_address: str | None = None
    session_direction = "sendrecv"
    builders: list[_StreamBuilder] = []
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=" or not line[0].isascii() or not line[0].isalpha():
            raise SdpError(f"not an SDP line: {line[:40]!r}")
        kind, value = line[0], line[2:].strip()
        current = builders[-1] if builders else None
        if kind == "m":
            if len(builders) >= MAX_STREAMS:
                raise SdpError(f"more than {MAX_STREAMS} media streams")
            builders.append(_StreamBuilder.from_m_line(len(builders), value))
        elif kind == "o" and current is None:
            origin = value
        elif kind == "c":
            address = _connection_address(value)
            if current is None:
                session_address = address
            else:
                current.address = address
        elif kind == "a":
            name, _, attr_value = value.partition(":")
            name = name.strip().lower()
            if current is None:
                if name in DIRECTIONS:
                    session_direction = name
            else:
                current.attribute(name, attr_value.strip())
    streams = [b.build(session_address, session_direction) for b in builders]
    return SessionDescription(streams=streams, address=session_address, origin=origin)


def _connection_address(value: str) -> str:
    # c=<nettype> <addrtype> <connection-address>[/ttl[/count]] (RFC 4566 §5.7)
    parts = value.split()
    if len(parts) < 3 or parts[0].upper() != "IN" or parts[1].upper() not in ("IP4", "IP6"):
        raise SdpError(f"bad c= line: {value[:60]!r}")
    return parts[2].split("/")[0]


def _int(text: str, what: str, lowest: int, highest: int) -> int:
    if not text.isascii() or not text.isdigit():
        raise SdpError(f"bad {what}: {text[:20]!r}")
    number = int(text)
    if not lowest <= number <= highest:
        raise SdpError(f"{what} out of range: {number}")
    return number


@dataclass
class _StreamBuilder:
    index: int
    media: str
    port: int
    proto: str
    tokens: list[str]
    address: str | None = None
    label: str | None = None
    direction: str | None = None
    ptime: int | None = None
    rtpmaps: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    fmtps: dict[int, str] = field(default_factory=dict)

    @classmethod
    def from_m_line(cls, index: int, value: str) -> _StreamBuilder:
        # m=<media> <port>[/<count>] <proto> <fmt> ... (RFC 4566 §5.14)
        parts = value.split()
        if len(parts) < 3:
            raise SdpError(f"bad m= line: {value[:60]!r}")
        if len(parts) - 3 > MAX_FORMATS:
            raise SdpError(f"more than {MAX_FORMATS} formats in one m= line")
        port = _int(parts[1].split("/")[0], "m= port", 0, 65535)
        return cls(index, parts[0].lower(), port, parts[2], parts[3:])

    def attribute(self, name: str, value: str) -> None:
        # Malformed attributes are skipped, not fatal: a vendor's odd a=rtpmap for a format
        # we do not take must not cost the call.
        if name in DIRECTIONS:
            self.direction = name
        elif name == "label":
            self.label = value or None
        elif name == "ptime":
            if value.isascii() and value.isdigit() and 0 < int(value) <= 10_000:
                self.ptime = int(value)
        elif name == "rtpmap":
            pt_text, _, encoding = value.partition(" ")
            pieces = encoding.strip().split("/")
            if not pt_text.isascii() or not pt_text.isdigit() or not pieces[0]:
                return
            rate_ok = len(pieces) >= 2 and pieces[1].isascii() and pieces[1].isdigit()
            channels_ok = len(pieces) < 3 or (pieces[2].isascii() and pieces[2].isdigit())
            if rate_ok and channels_ok and len(pieces) <= 3:
                channels = int(pieces[2]) if len(pieces) == 3 else 1
                self.rtpmaps[int(pt_text)] = (pieces[0], int(pieces[1]), channels)
        elif name == "fmtp":
            pt_text, _, params = value.partition(" ")
            if pt_text.isascii() and pt_text.isdigit():
                self.fmtps[int(pt_text)] = params.strip()

    def build(self, session_address: str | None, session_direction: str) -> MediaStream:
        formats: list[PayloadFormat] = []
        if self.proto.upper().startswith("RTP/"):
            for token in self.tokens:
                if not token.isascii() or not token.isdigit() or int(token) > 127:
                    raise SdpError(f"bad RTP payload type: {token[:20]!r}")
                pt = int(token)
                name, rate, channels = self.rtpmaps.get(pt) or _STATIC.get(pt, ("", 0, 1))
                formats.append(PayloadFormat(pt, name, rate, channels, self.fmtps.get(pt)))
        return MediaStream(
            index=self.index,
            media=self.media,
            port=self.port,
            address=self.address if self.address is not None else session_address,
            proto=self.proto,
            formats=formats,
            label=self.label,
            direction=self.direction or session_direction,
            ptime=self.ptime,
            format_tokens=list(self.tokens),
        )


def choose_format(
    stream: MediaStream, accepted_names: Iterable[str] = DEFAULT_FORMATS
) -> PayloadFormat | None:
    """The first format the offerer lists that the capture takes, or None.

    Offer order is the offerer's preference (RFC 3264 §5.1); names compare case-insensitively
    (``opus``/``OPUS``). A rejected stream (port 0), one that is not RTP audio, or SRTP
    (``RTP/SAVP``: the keys are the client's and the answer could not change the profile,
    RFC 3264 §6) takes none.
    """
    if stream.media != "audio" or stream.port == 0 or stream.proto.upper() not in PLAIN_RTP:
        return None
    accepted = {name.lower() for name in accepted_names}
    for fmt in stream.formats:
        if fmt.name.lower() in accepted:
            return fmt
    return None


def choose_formats(
    offer: SessionDescription, accepted_names: Iterable[str] = DEFAULT_FORMATS
) -> dict[int, PayloadFormat]:
    """The chosen format of every audio stream that has one; :class:`UnacceptableMedia` if none."""
    names = tuple(accepted_names)
    chosen = {
        stream.index: fmt
        for stream in offer.streams
        if (fmt := choose_format(stream, names)) is not None
    }
    if not chosen:
        raise UnacceptableMedia(f"no audio stream offers one of {', '.join(names)}")
    return chosen


def _telephone_event(stream: MediaStream, rate: int) -> PayloadFormat | None:
    # RFC 4733 §2.5.1.1: events share the audio's clock rate; take the one that matches.
    events = [f for f in stream.formats if f.name.lower() == TELEPHONE_EVENT]
    matching = [f for f in events if f.rate == rate]
    found = matching or events
    return found[0] if found else None


def _rtpmap(fmt: PayloadFormat) -> str:
    suffix = f"/{fmt.channels}" if fmt.channels != 1 else ""
    return f"a=rtpmap:{fmt.pt} {fmt.name}/{fmt.rate}{suffix}"


def answer_sdp(
    offer: SessionDescription,
    *,
    address: str,
    ports: Mapping[int, int],
    formats: Mapping[int, PayloadFormat],
    session_id: int,
    version: int,
) -> str:
    """The answer: as many ``m=`` lines as offered, in order (RFC 3264 §6).

    A stream whose index is in ``ports`` is accepted ``recvonly`` on that port with its
    format from ``formats`` (and the offered telephone-event, so that the client may keep
    sending it; the receiver drops it); every other stream gets port 0. An answer that
    accepts nothing is no answer: :class:`UnacceptableMedia`.
    """
    accepted = [s.index for s in offer.streams if s.index in ports]
    if not accepted:
        raise UnacceptableMedia("the answer accepts no stream")
    missing = [index for index in accepted if index not in formats]
    if missing:
        raise ValueError(f"accepted streams without a format: {missing}")
    family = "IP6" if ":" in address else "IP4"
    lines = [
        "v=0",
        f"o=callrec {session_id} {version} IN {family} {address}",
        "s=callrec",
        f"c=IN {family} {address}",
        "t=0 0",
    ]
    for stream in offer.streams:
        if stream.index not in ports:
            tokens = stream.format_tokens or ["0"]
            lines.append(f"m={stream.media} 0 {stream.proto} {' '.join(tokens)}")
            continue
        fmt = formats[stream.index]
        event = _telephone_event(stream, fmt.rate)
        chosen = [fmt] if event is None else [fmt, event]
        pts = " ".join(str(f.pt) for f in chosen)
        lines.append(f"m={stream.media} {ports[stream.index]} {stream.proto} {pts}")
        for f in chosen:
            lines.append(_rtpmap(f))
            if f.fmtp:
                lines.append(f"a=fmtp:{f.pt} {f.fmtp}")
        if stream.label is not None:
            lines.append(f"a=label:{stream.label}")
        lines.append("a=recvonly")
    return "\r\n".join(lines) + "\r\n"
