"""What each live codec needs from the capture session: cut packets into slots, silence,
and the container that holds its channels.

A slot is the timeline's unit: 20 ms of Opus (a whole number of Opus frames), 10 ms of
G.711 and G.722 (so that packets of 20 or 30 ms both fit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from recorder.capture import au, mka, ogg, opus

T = TypeVar("T")
T_in = TypeVar("T_in", contravariant=True)


class Container(Protocol[T_in]):
    @property
    def samples(self) -> int: ...

    def start(self) -> bytes: ...
    def write(self, streams: Sequence[T_in]) -> bytes: ...
    def write_steps(self, columns: Sequence[Sequence[T_in]]) -> bytes: ...
    def close(self) -> bytes: ...


@dataclass(frozen=True)
class Codec(Generic[T]):
    """A live codec as the capture session sees it."""

    name: str
    rate: int  # RTP clock rate
    slot: int  # samples per slot
    container: str  # the stored object's extension

    def split(self, payload: bytes) -> list[T]:
        raise NotImplementedError

    def silence(self) -> T:
        raise NotImplementedError

    def writer(self, channels: int, *, serial: int) -> Container[T]:
        raise NotImplementedError


@dataclass(frozen=True)
class OpusCodec(Codec[opus.OpusPacket]):
    name: str = "opus"
    rate: int = opus.RATE
    slot: int = opus.SILENCE_SAMPLES
    container: str = "ogg"

    def split(self, payload: bytes) -> list[opus.OpusPacket]:
        """One packet per 20 ms; frames longer than that cannot be cut without decoding."""
        packet = opus.parse(payload)
        per_slot, rest = divmod(self.slot, packet.frame_samples)
        if per_slot == 0 or rest or len(packet.frames) % per_slot:
            raise ValueError(f"Opus packet of {packet.samples} samples does not fill 20 ms steps")
        frames = packet.frames
        return [
            opus.OpusPacket(packet.toc, frames[i : i + per_slot])
            for i in range(0, len(frames), per_slot)
        ]

    def silence(self) -> opus.OpusPacket:
        return opus.silence(self.slot)

    def writer(self, channels: int, *, serial: int) -> ogg.OggOpusWriter:
        return ogg.OggOpusWriter(channels, serial=serial)


@dataclass(frozen=True)
class G711Codec(Codec[bytes]):
    name: Literal["pcmu", "pcma"] = "pcmu"
    rate: int = au.RATE
    slot: int = au.RATE // 100
    container: str = "au"

    def split(self, payload: bytes) -> list[bytes]:
        if not payload or len(payload) % self.slot:
            raise ValueError(f"G.711 payload of {len(payload)} samples is not a multiple of 10 ms")
        return [payload[i : i + self.slot] for i in range(0, len(payload), self.slot)]

    def silence(self) -> bytes:
        return bytes((au.SILENCE[self.name],)) * self.slot

    def writer(self, channels: int, *, serial: int) -> au.AuWriter:
        return au.AuWriter(channels, self.name)


# G.722 bytes that decode to silence whatever the decoder's state: measured, not taken
# from the encoder, since FFmpeg's G.722 encoder does not settle on one pattern for zero
# input (after 45 bytes of 0xFA, which decode to a hum of about -44 dBFS). Every one of
# the 256 constant bytes was decoded after a tone and from a fresh decoder: 0xFC gives
# exact zeros from the fresh state and, after speech, a residue of -60 to -63 dBFS that
# none beats (0xFD-0xFF tie); tests/recorder/capture/test_g722.py checks it.
G722_SILENCE = 0xFC


@dataclass(frozen=True)
class G722Codec(Codec[bytes]):
    """G.722 as RTP carries it (RFC 3551 §4.5.2): a byte is two 16 kHz samples, and the
    RTP clock counts bytes at 8000 per second, so 10 ms is 80 bytes and 80 ticks."""

    name: str = "g722"
    rate: int = mka.RTP_RATE
    slot: int = mka.RTP_RATE // 100
    container: str = "mka"

    def split(self, payload: bytes) -> list[bytes]:
        if not payload or len(payload) % self.slot:
            raise ValueError(f"G.722 payload of {len(payload)} bytes is not a multiple of 10 ms")
        return [payload[i : i + self.slot] for i in range(0, len(payload), self.slot)]

    def silence(self) -> bytes:
        return bytes((G722_SILENCE,)) * self.slot

    def writer(self, channels: int, *, serial: int) -> mka.G722MatroskaWriter:
        return mka.G722MatroskaWriter(channels)


OPUS = OpusCodec()
PCMU = G711Codec("pcmu")
PCMA = G711Codec("pcma")
G722 = G722Codec()

_BY_SDP_NAME: dict[str, Codec[Any]] = {"pcmu": PCMU, "pcma": PCMA, "g722": G722, "opus": OPUS}


def codec_named(name: str) -> Codec[Any] | None:
    """The live codec of an SDP encoding name (``PCMU``, ``G722``, ``opus``: any case)."""
    return _BY_SDP_NAME.get(name.strip().lower())


# The media type each stored container is served as: every container a recording can
# be stored in (the live codecs' above, and uploads' Ogg/Opus). Sun's .au is
# ``audio/basic`` (RFC 2046 §4.3; the usual mime.types entry for .au, and players read
# the header, so A-law and two channels are told apart there); Matroska audio has no
# registered type, ``audio/x-matroska`` is the one in common use; Ogg is RFC 5334's.
MEDIA_TYPES = {"ogg": "audio/ogg", "au": "audio/basic", "mka": "audio/x-matroska"}


def media_type(container: str) -> str:
    """The media type a recording in ``container`` is served as (bytes for an unknown one)."""
    return MEDIA_TYPES.get(container, "application/octet-stream")
