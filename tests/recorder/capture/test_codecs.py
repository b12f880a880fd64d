"""The media type each stored container is served as."""

from __future__ import annotations

import pytest

from recorder.capture.codecs import G722, OPUS, PCMA, PCMU, Codec, media_type


@pytest.mark.parametrize(
    ("codec", "served"),
    [(OPUS, "audio/ogg"), (PCMU, "audio/basic"), (PCMA, "audio/basic"), (G722, "audio/x-matroska")],
)
def test_every_live_container_is_served_as_a_known_audio_type(
    codec: Codec[object], served: str
) -> None:
    assert media_type(codec.container) == served


def test_an_unknown_container_is_served_as_bytes() -> None:
    assert media_type("xyz") == "application/octet-stream"
