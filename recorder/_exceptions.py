"""Exceptions raised by the gateway itself (``recorder.errors`` maps each to its status).

CallrecError
└── RecorderError
    ├── AudioError              an upload that cannot be stored as audio
    │   ├── UnsupportedAudio    a content type callrec does not take (415)
    │   ├── InvalidAudio        not the format it claims, or not decodable (422)
    │   └── AudioTooLong        longer than the uploads' duration limit (413)
    └── LiveCaptureError        live capture (WHIP, SIPREC)
        ├── CaptureBusy         as many live sessions as this replica may hold (503)
        ├── UnknownSession      no such live session here, or another tenant's (404)
        ├── NoTrickle           trickle ICE and ICE restarts are not offered (405)
        └── PortsExhausted      every RTP port of CALLREC_RTP_PORTS is in use (503)
"""

from collections.abc import Mapping
from typing import ClassVar

from storage.errors import CallrecError


class RecorderError(CallrecError):
    """Base of the gateway's errors."""


class AudioError(RecorderError, ValueError):
    """Unusable upload; ``code`` is ``unsupported_media_type`` or ``invalid_audio``."""

    code = "invalid_audio"


class UnsupportedAudio(AudioError):
    code = "unsupported_media_type"


class InvalidAudio(AudioError):
    code = "invalid_audio"


class AudioTooLong(AudioError):
    code = "upload_too_long"


class LiveCaptureError(RecorderError):
    """Base of live capture's errors."""

    code = "live_capture_error"


class CaptureBusy(LiveCaptureError):
    """The replica holds as many live sessions as it may (503)."""

    code = "capture_busy"


class UnknownSession(LiveCaptureError):
    """No live session by that id on this replica, or another tenant's (404)."""

    code = "unknown_session"


class NoTrickle(LiveCaptureError):
    """A WHIP ``PATCH``: every candidate is in the answer, nothing to add (405)."""

    code = "method_not_allowed"
    headers: ClassVar[Mapping[str, str]] = {"Allow": "POST, DELETE, OPTIONS"}


class PortsExhausted(LiveCaptureError):
    """Every RTP port of the configured range is held by a stream, or will not bind (503)."""

    code = "rtp_ports_exhausted"
