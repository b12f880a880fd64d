"""SIP over a stream (RFC 3261 §18.3): messages cut out of TCP bytes by ``Content-Length``.

A stream has no datagram edges, so the head's end and ``Content-Length`` are all there is
to cut by; a message whose head or length cannot be read leaves the rest of the stream
unreadable, and the connection is closed (``SipParseError``). The buffer is bounded by
``MAX_MESSAGE``: a peer that sends more without a complete message is cut off too.
"""

from __future__ import annotations

import re

from recorder.sip.message import MAX_MESSAGE, SipParseError

__all__ = ["StreamFramer"]

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\S*)[ \t]*\r?$", re.I | re.M)
_START = re.compile(rb"(?:[A-Za-z0-9.!%*_+`'~\-]+ \S+ SIP/\d+\.\d+|SIP/\d+\.\d+ \d{3}( .*)?)\r?")


class StreamFramer:
    """Bytes of one connection in, whole messages out (each then given to ``parse``)."""

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self.pings = 0  # RFC 5626 keep-alives seen (a CRLF CRLF between messages), each owed a CRLF
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """The messages completed by ``data``; raises SipParseError when the stream is lost."""
        self._buffer += data
        messages: list[bytes] = []
        while True:
            # §7.5 and RFC 5626 §4.4.1: CRLFs between messages are keep-alives.
            start = 0
            while start < len(self._buffer) and self._buffer[start] in b"\r\n":
                start += 1
            if start:
                self.pings += self._buffer[:start].count(b"\r\n\r\n")
                del self._buffer[:start]
            message = self._next()
            if message is None:
                return messages
            messages.append(message)

    def _next(self) -> bytes | None:
        buffer = self._buffer
        line_end = buffer.find(b"\n")
        if line_end >= 0 and not _START.fullmatch(bytes(buffer[:line_end])):
            raise SipParseError("not a SIP start line on the stream")
        head_end = _HEAD_END.search(buffer)
        if head_end is None:
            if len(buffer) > self.max_message:
                raise SipParseError(f"no end of head in {self.max_message} bytes")
            return None
        head = bytes(buffer[: head_end.start()])
        lengths = _CONTENT_LENGTH.findall(head)
        if len(set(lengths)) > 1:
            raise SipParseError("two different Content-Length headers")
        # RFC 3261 §20.14 makes it mandatory on a stream; without one, no body is assumed.
        text = lengths[0] if lengths else b"0"
        if not text.isdigit() or len(text) > 9:
            raise SipParseError(f"bad Content-Length {text[:20]!r}")
        total = head_end.end() + int(text)
        if total > self.max_message:
            raise SipParseError(f"message of {total} bytes exceeds {self.max_message}")
        if len(buffer) < total:
            return None
        message = bytes(buffer[:total])
        del buffer[:total]
        return message
