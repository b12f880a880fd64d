"""Normalize an uploaded recording (wav, mp3, ogg, flac) to Ogg/Opus, streaming.

``probe`` checks that the spooled body is the format its content type claims and
holds one decodable audio stream; ``to_ogg_opus`` decodes it frame by frame,
resamples to 48 kHz and encodes Opus into Ogg pages handed out as they are muxed.
Nothing holds the whole recording, so memory stays flat whatever the length; that
is also why pydub (which loads whole files) only builds fixtures in the tests.

Channels are kept: one per party. Mono and stereo use the standard Opus mapping
(family 0); 3 to 8 channels use family 255, independent channels with no speaker
positions, because parties are not surround speakers.

A body that ends early but decodes cleanly (a WAV whose header promises more, an
mp3 cut short) is stored with the duration actually decoded: every sample in it is
genuine, and refusing would lose the whole call (a warning is logged when the
container declared more). A decoder error (a FLAC cut mid-frame, corrupt mp3 frames,
an Ogg whose last page is cut) is refused.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Protocol

import av
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.container import InputContainer

from recorder._exceptions import AudioError as AudioError
from recorder._exceptions import AudioTooLong, InvalidAudio, UnsupportedAudio

log = logging.getLogger(__name__)

SUPPORTED_TYPES: Mapping[str, str] = {
    **dict.fromkeys(("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"), "wav"),
    **dict.fromkeys(("audio/mpeg", "audio/mp3"), "mp3"),
    **dict.fromkeys(("audio/ogg", "audio/opus"), "ogg"),
    **dict.fromkeys(("audio/flac", "audio/x-flac"), "flac"),
}

OPUS_RATE = 48_000  # RFC 7845 §4: Ogg/Opus granule positions always count 48 kHz samples
MAX_CHANNELS = 8  # one per party; RFC 7845 channel mapping family 1 also stops at 8
_FRAME = 960  # 20 ms at 48 kHz: the encoder's frame size
_ID3_MAX_TAGS = 4  # bound the sniffing loop on files that chain ID3 tags


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What ``probe`` found; ``duration_s`` is what the container declares or estimates."""

    format: str
    codec: str
    channels: int
    sample_rate: int
    duration_s: float


class Body(Protocol):
    """An upload's bytes, readable as often as needed (a ``storage.scratch.Scratch``)."""

    @property
    def size(self) -> int: ...

    def open(self) -> IO[bytes]: ...


class FileBody:
    """A body in a plain file (tests and tools; uploads arrive in an encrypted scratch)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def open(self) -> IO[bytes]:
        return self.path.open("rb")


def _body(source: Path | Body) -> Body:
    return FileBody(source) if isinstance(source, Path) else source


def _invalid(message: str) -> AudioError:
    return InvalidAudio(message)


def _sniff(source: Body) -> str | None:
    """The format the magic bytes announce, looking past ID3v2 tags (mp3 and flac carry them)."""
    with source.open() as body:
        head = body.read(12)
        for _ in range(_ID3_MAX_TAGS):
            if not (head.startswith(b"ID3") and len(head) >= 10):
                break
            # ID3v2 §3.1: a 10-byte header, a syncsafe size, then a 10-byte footer if flagged.
            size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
            body.seek(body.tell() - len(head) + 10 + size + (10 if head[5] & 0x10 else 0))
            head = body.read(12)
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"fLaC"):
        return "flac"
    # MPEG audio frame sync: 11 set bits, and a layer field that ADTS (AAC) leaves at zero.
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06:
        return "mp3"
    return None


@contextmanager
def _open(source: Body, fmt: str) -> Iterator[InputContainer]:
    # The demuxer is forced: letting FFmpeg guess could pick playlist formats that open
    # other files or URLs named inside the body. Tags are never used, so tag bytes that
    # are not UTF-8 must not fail an upload. The body is handed over as a file object:
    # FFmpeg never gets a path it could open itself.
    with (
        source.open() as raw,
        av.open(raw, mode="r", format=fmt, metadata_errors="replace") as container,
    ):
        yield container


def probe(
    source: Path | Body, content_type: str, *, max_duration_s: float | None = None
) -> AudioInfo:
    """Check the declared type against the body and find its one audio stream.

    Raises ``AudioError``: ``unsupported_media_type`` for a type not in
    ``SUPPORTED_TYPES``, ``invalid_audio`` for a body that is empty, another format,
    undecodable, longer than zero but without samples, or with more than 8 channels,
    ``upload_too_long`` when the container declares more than ``max_duration_s``.
    """
    with open_upload(source, content_type, max_duration_s=max_duration_s) as upload:
        return upload.info


class Upload:
    """An upload's container, opened once: what ``probe`` found, then its frames.

    The frames decoded to prove the body decodes are kept and handed on first, and
    the decoding carries on from where it stopped: the body is read once.
    """

    def __init__(self, info: AudioInfo, frames: Iterator[AudioFrame]) -> None:
        self.info = info
        self._frames: Iterator[AudioFrame] | None = frames

    def frames(self) -> Iterator[AudioFrame]:
        """Every decoded frame, once (FFmpegError if the body stops decoding)."""
        if self._frames is None:
            raise ValueError("the upload's frames were already taken")
        frames, self._frames = self._frames, None
        return frames

    def to_ogg_opus(
        self, *, bitrate_per_channel: int = 32_000, max_duration_s: float | None = None
    ) -> OpusEncoding:
        """Encode these frames to Ogg/Opus, as ``to_ogg_opus`` does (iterate once)."""
        return OpusEncoding(self, self.info, bitrate_per_channel, max_duration_s)


@contextmanager
def open_upload(
    source: Path | Body, content_type: str, *, max_duration_s: float | None = None
) -> Iterator[Upload]:
    """Probe an upload (as ``probe`` does) and keep it open for its encoding."""
    declared = content_type.split(";", 1)[0].strip().lower()
    fmt = SUPPORTED_TYPES.get(declared)
    if fmt is None:
        raise UnsupportedAudio(f"unsupported content type {declared!r}")
    body = _body(source)
    if body.size == 0:
        raise _invalid("empty body")
    found = _sniff(body)
    if found is None:
        raise _invalid(f"declared {declared} but the body is not wav, mp3, ogg or flac")
    if found != fmt:
        raise _invalid(f"declared {declared} but the body is {found}")
    with _open_checked(body, fmt) as container:
        try:
            streams = container.streams.audio
            if len(streams) != 1:
                raise _invalid("no audio stream" if not streams else "more than one audio stream")
            stream = streams[0]
            if stream.channels > MAX_CHANNELS:
                raise _invalid(f"{stream.channels} channels; at most {MAX_CHANNELS} are supported")
            # Decode up to the first samples: proves the codec really decodes this body
            # and turns a header-only file into a clear error. The same generator goes
            # on later: a packet's other frames stay in it.
            decoding, first = container.decode(stream), []
            for frame in decoding:
                first.append(frame)
                if frame.samples:
                    break
            else:
                raise _invalid("zero duration: no audio samples")
            duration = container.duration / 1_000_000 if container.duration else 0.0
            _check_length(duration, max_duration_s, "declares")
            info = AudioInfo(
                format=fmt,
                codec=stream.codec_context.codec.canonical_name,
                channels=stream.channels,
                sample_rate=stream.sample_rate,
                duration_s=duration,
            )
        except av.FFmpegError as exc:
            raise _invalid(f"undecodable {fmt}: {exc.strerror or exc}") from exc
        yield Upload(info, itertools.chain(first, decoding))


@contextmanager
def _open_checked(body: Body, fmt: str) -> Iterator[InputContainer]:
    try:
        opened = _open(body, fmt)
        container = opened.__enter__()
    except av.FFmpegError as exc:
        raise _invalid(f"undecodable {fmt}: {exc.strerror or exc}") from exc
    try:
        yield container
    finally:
        opened.__exit__(None, None, None)


def _check_length(duration_s: float, max_duration_s: float | None, verb: str) -> None:
    # A few kilobytes of FLAC can hold hours of silence: the bytes bound nothing.
    if max_duration_s is not None and duration_s > max_duration_s:
        raise AudioTooLong(
            f"the upload {verb} {duration_s:.0f} s of audio; at most {max_duration_s:.0f} s "
            "are accepted"
        )


class _Pieces:
    """A write-only file for the muxer: collects what it writes until drained."""

    def __init__(self) -> None:
        self._pieces: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._pieces.append(bytes(data))
        return len(data)

    def drain(self) -> list[bytes]:
        pieces, self._pieces = self._pieces, []
        return pieces


class OpusEncoding:
    """The Ogg/Opus encoding of one upload: iterate for the bytes, in pieces.

    Each iteration decodes and encodes the file afresh. Once one has run to the end,
    ``duration_s`` holds the duration actually decoded (``None`` until then); a body
    that stops decoding raises ``AudioError(invalid_audio)`` mid-iteration, and one
    that decodes past ``max_duration_s`` raises ``AudioTooLong`` as soon as it does.
    """

    def __init__(
        self,
        body: Body | Upload,
        info: AudioInfo,
        bitrate_per_channel: int,
        max_duration_s: float | None = None,
    ) -> None:
        self.body = body
        self.info = info
        self.bit_rate = bitrate_per_channel * info.channels
        self.max_duration_s = max_duration_s
        self.duration_s: float | None = None

    def __iter__(self) -> Generator[bytes, None, None]:
        self.duration_s = None
        sink, samples = _Pieces(), 0
        with av.open(sink, mode="w", format="ogg") as output:
            options = {"application": "voip"}  # tuned for speech; VBR is the default
            if self.info.channels > 2:
                options["mapping_family"] = "255"
            stream = output.add_stream("libopus", rate=OPUS_RATE, options=options)
            stream.layout, stream.format = f"{self.info.channels}c", "flt"
            stream.bit_rate = self.bit_rate
            for frame in self._resampled():
                frame.pts, frame.time_base = samples, Fraction(1, OPUS_RATE)
                samples += frame.samples
                output.mux(stream.encode(frame))
                yield from sink.drain()
            if samples == 0:
                raise _invalid("no audio samples decoded")
            output.mux(stream.encode(None))
        yield from sink.drain()  # closing the muxer wrote the last page
        self.duration_s = samples / OPUS_RATE
        if self.info.duration_s - self.duration_s > 0.1:
            log.warning(
                "upload ends early: %.2f s of %.2f s", self.duration_s, self.info.duration_s
            )

    @contextmanager
    def _decoded(self) -> Iterator[Iterator[AudioFrame]]:
        if isinstance(self.body, Upload):  # opened once, by open_upload
            yield self.body.frames()
            return
        with _open(self.body, self.info.format) as container:
            yield container.decode(container.streams.audio[0])

    def _resampled(self) -> Iterator[AudioFrame]:
        """Decoded frames as 48 kHz float in encoder-sized frames, same channel count."""
        layout, decoded = f"{self.info.channels}c", 0.0
        resampler: AudioResampler | None = None
        source: tuple[str, str, int] | None = None
        try:
            with self._decoded() as frames:
                for frame in frames:
                    if frame.layout.nb_channels != self.info.channels:
                        raise _invalid(f"channel count changes at {decoded:.1f} s")
                    shape = (frame.format.name, frame.layout.name, frame.sample_rate)
                    if resampler is None or shape != source:
                        # A rate change mid-stream (concatenated files) needs a fresh
                        # resampler; flush the old one first.
                        if resampler is not None:
                            yield from resampler.resample(None)
                        resampler = AudioResampler("flt", layout, OPUS_RATE, frame_size=_FRAME)
                        source = shape
                    decoded += frame.samples / frame.sample_rate
                    _check_length(decoded, self.max_duration_s, "holds more than")
                    yield from resampler.resample(frame)
                if resampler is not None:
                    yield from resampler.resample(None)
        except av.FFmpegError as exc:
            message = f"truncated or corrupt audio: decoding failed at {decoded:.1f} s"
            raise _invalid(message) from exc


def to_ogg_opus(
    source: Path | Body,
    info: AudioInfo,
    *,
    bitrate_per_channel: int = 32_000,
    max_duration_s: float | None = None,
) -> OpusEncoding:
    """Encode a probed upload to Ogg/Opus at 48 kHz, VBR, ``bitrate_per_channel`` per channel.

    Returns an ``OpusEncoding``: an iterable of output pieces (one decode, one
    encode, bounded memory) whose ``duration_s`` is filled once fully iterated.
    """
    return OpusEncoding(_body(source), info, bitrate_per_channel, max_duration_s)


def duration_of_ogg(data_or_path: bytes | Path) -> float:
    """Duration of an Ogg/Opus stream: last granule position minus pre-skip, at 48 kHz.

    Reads only the head and the last page of a file. Raises ``ValueError`` if the
    data is not a complete Ogg/Opus stream.
    """
    # RFC 3533 §6: a page is at most 27 + 255 + 255 * 255 bytes.
    max_page = 27 + 255 + 255 * 255
    if isinstance(data_or_path, Path):
        with data_or_path.open("rb") as body:
            head = body.read(4096)
            body.seek(max(0, body.seek(0, 2) - max_page))
            tail = body.read()
    else:
        head, tail = data_or_path[:4096], data_or_path[-max_page:]
    at = head.find(b"OpusHead")
    if not head.startswith(b"OggS") or at < 0 or len(head) < at + 12:
        raise ValueError("not an Ogg/Opus stream")
    pre_skip = int.from_bytes(head[at + 10 : at + 12], "little")  # RFC 7845 §5.1
    start = len(tail)
    while (start := tail.rfind(b"OggS", 0, start)) >= 0:
        # Only the real last page ends exactly at the end of the data.
        count = tail[start + 26] if start + 27 <= len(tail) else -1
        segments = tail[start + 27 : start + 27 + count]
        if len(segments) == count and start + 27 + count + sum(segments) == len(tail):
            granule = int.from_bytes(tail[start + 6 : start + 14], "little", signed=True)
            if granule >= 0:
                return max(0, granule - pre_skip) / OPUS_RATE
    raise ValueError("Ogg/Opus stream has no final page")
