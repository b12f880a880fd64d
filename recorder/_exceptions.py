"""Exceptions raised by the gateway itself (``recorder.errors`` maps each to its status).

CallrecError
└── RecorderError
    └── AudioError              an upload that cannot be stored as audio
        ├── UnsupportedAudio    a content type callrec does not take (415)
        ├── InvalidAudio        not the format it claims, or not decodable (422)
        └── AudioTooLong        longer than the uploads' duration limit (413)
"""

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
