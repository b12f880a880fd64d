"""Upload normalization on real audio: every format in, Ogg/Opus out, bad bodies refused."""

from __future__ import annotations

import io
import json
import math
import random
import struct
import subprocess
import sys
import warnings
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import imageio_ffmpeg
import pytest

from recorder.audio import (
    SUPPORTED_TYPES,
    AudioError,
    AudioInfo,
    OpusEncoding,
    duration_of_ogg,
    probe,
    to_ogg_opus,
)

with warnings.catch_warnings():
    # pydub warns on import that no `ffmpeg` is on PATH (the session fixture points it at
    # the imageio-ffmpeg binary) and imports the deprecated audioop module.
    warnings.simplefilter("ignore")
    from pydub import AudioSegment
    from pydub.generators import Sine

SECONDS = 3.0
LEFT_HZ, RIGHT_HZ = 440, 1750  # far apart, neither a harmonic of the other
TOLERANCE_S = 0.05
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Case:
    name: str
    content_type: str
    format: str
    codec: str
    export: str  # pydub/ffmpeg output format
    parameters: tuple[str, ...] = ()
    rate: int = 44_100


CASES = [
    Case("wav", "audio/wav", "wav", "pcm_s16le", "wav"),
    Case("wav-ulaw-8k", "audio/x-wav", "wav", "pcm_mulaw", "wav", ("-c:a", "pcm_mulaw"), 8000),
    Case("mp3", "audio/mpeg", "mp3", "mp3", "mp3"),
    # No ID3 tag and no Xing header: sniffed by the frame sync, length estimated.
    Case("mp3-bare", "audio/mp3", "mp3", "mp3", "mp3", ("-id3v2_version", "0", "-write_xing", "0")),
    Case("ogg-vorbis", "audio/ogg", "ogg", "vorbis", "ogg", ("-c:a", "libvorbis")),
    Case("ogg-opus", "audio/opus", "ogg", "opus", "ogg", ("-c:a", "libopus")),
    Case("flac", "audio/flac", "flac", "flac", "flac"),
]
DAMAGEABLE = [c for c in CASES if c.format != "wav"]


@pytest.fixture(scope="session")
def pydub_ffmpeg() -> None:
    """pydub shells out to ffmpeg for all but WAV: use the binary imageio-ffmpeg ships."""
    AudioSegment.converter = imageio_ffmpeg.get_ffmpeg_exe()


@pytest.fixture(scope="session")
def recordings(
    pydub_ffmpeg: None, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, int], Path]:
    """Each case as a 3 s mono (one tone) and stereo (a different tone per channel) file."""
    folder = tmp_path_factory.mktemp("audio")
    files: dict[tuple[str, int], Path] = {}
    for case in CASES:
        left = Sine(LEFT_HZ, sample_rate=case.rate).to_audio_segment(SECONDS * 1000, -6.0)
        right = Sine(RIGHT_HZ, sample_rate=case.rate).to_audio_segment(SECONDS * 1000, -6.0)
        stereo = AudioSegment.from_mono_audiosegments(left, right)
        for segment in (left, stereo):
            path = folder / f"{case.name}-{segment.channels}.{case.export}"
            segment.export(path, format=case.export, parameters=list(case.parameters)).close()
            files[case.name, segment.channels] = path
    return files


def _encode(path: Path, content_type: str) -> tuple[AudioInfo, OpusEncoding, bytes]:
    info = probe(path, content_type)
    encoding = to_ogg_opus(path, info)
    return info, encoding, b"".join(encoding)


def _encode_or_refusal(
    path: Path, content_type: str
) -> tuple[AudioInfo, OpusEncoding, bytes] | AudioError:
    try:
        return _encode(path, content_type)
    except AudioError as refusal:
        return refusal


def _decoded(data: bytes) -> tuple[int, int, float]:
    """(channels, sample rate, seconds) of Ogg/Opus bytes, decoded with PyAV."""
    with av.open(io.BytesIO(data), mode="r", format="ogg") as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus"
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.channels, stream.sample_rate, samples / stream.sample_rate


def _tone_power(samples: Sequence[int], rate: int, hz: float) -> float:
    # Goertzel: the energy of one frequency without an FFT library.
    coeff = 2 * math.cos(2 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_round_trip(recordings: dict[tuple[str, int], Path], case: Case, channels: int) -> None:
    info, encoding, data = _encode(recordings[case.name, channels], case.content_type)

    assert (info.format, info.codec, info.channels) == (case.format, case.codec, channels)
    assert info.sample_rate == (48_000 if case.codec == "opus" else case.rate)
    assert info.duration_s == pytest.approx(SECONDS, abs=TOLERANCE_S)
    assert data.startswith(b"OggS")
    assert b"OpusHead" in data[:100]
    decoded_channels, rate, seconds = _decoded(data)
    assert (decoded_channels, rate) == (channels, 48_000)
    assert seconds == pytest.approx(SECONDS, abs=TOLERANCE_S)
    assert encoding.duration_s == pytest.approx(seconds, abs=0.001)
    assert duration_of_ogg(data) == pytest.approx(seconds, abs=0.001)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_stereo_channels_stay_apart(recordings: dict[tuple[str, int], Path], case: Case) -> None:
    _, _, data = _encode(recordings[case.name, 2], case.content_type)
    # Naming the decoder spares pydub a call to ffprobe, which imageio-ffmpeg lacks.
    decoded = AudioSegment.from_file(io.BytesIO(data), format="ogg", codec="opus")
    left, right = decoded.split_to_mono()
    for channel, mine, other in ((left, LEFT_HZ, RIGHT_HZ), (right, RIGHT_HZ, LEFT_HZ)):
        middle = channel[1000:1500]  # away from the encoder's start-up
        samples = middle.get_array_of_samples()
        own = _tone_power(samples, middle.frame_rate, mine)
        assert own > 100 * _tone_power(samples, middle.frame_rate, other)


def test_output_comes_in_pieces_and_duration_waits_for_the_end(
    recordings: dict[tuple[str, int], Path],
) -> None:
    path = recordings["wav", 1]
    encoding = to_ogg_opus(path, probe(path, "audio/wav"), bitrate_per_channel=16_000)
    pieces = iter(encoding)
    assert next(pieces).startswith(b"OggS")
    assert encoding.duration_s is None
    rest = list(pieces)
    assert len(rest) >= 2
    assert encoding.duration_s == pytest.approx(SECONDS, abs=TOLERANCE_S)


def test_abandoned_iteration_closes_cleanly(recordings: dict[tuple[str, int], Path]) -> None:
    path = recordings["flac", 2]
    pieces = iter(to_ogg_opus(path, probe(path, "audio/flac")))
    next(pieces)
    pieces.close()


def _voice_like(t: float) -> int:
    # Voiced speech, roughly: harmonics of a 150 Hz pitch, shaped into 4 syllables a second.
    envelope = math.sin(2 * math.pi * 2 * t) ** 2
    harmonics = sum(math.sin(2 * math.pi * 150 * k * t) / k for k in range(1, 10))
    return int(6000 * envelope * harmonics)


def _write_wav(path: Path, channels: int, frames: int, rate: int = 16_000) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        voice = [_voice_like(i / rate) for i in range(rate)]
        second = struct.pack(f"<{rate * channels}h", *(x for x in voice for _ in range(channels)))
        for start in range(0, frames, rate):  # one second at a time, straight to disk
            out.writeframes(second[: min(rate, frames - start) * channels * 2])


def test_four_parties_keep_four_channels(tmp_path: Path) -> None:
    path = tmp_path / "four.wav"
    _write_wav(path, channels=4, frames=16_000)
    info, encoding, data = _encode(path, "audio/wav")
    assert info.channels == 4
    assert _decoded(data)[0] == 4
    assert encoding.duration_s == pytest.approx(1.0, abs=TOLERANCE_S)


@pytest.mark.parametrize("content_type", ["video/mp4", "audio/aac", "text/plain", ""])
def test_unknown_content_type_is_unsupported(
    recordings: dict[tuple[str, int], Path], content_type: str
) -> None:
    with pytest.raises(AudioError) as caught:
        probe(recordings["wav", 1], content_type)
    assert caught.value.code == "unsupported_media_type"


def test_content_type_parameters_and_case_are_ignored(
    recordings: dict[tuple[str, int], Path],
) -> None:
    assert probe(recordings["ogg-opus", 1], "Audio/OGG; codecs=opus").format == "ogg"
    assert dict(SUPPORTED_TYPES) == {
        "audio/wav": "wav",
        "audio/x-wav": "wav",
        "audio/wave": "wav",
        "audio/vnd.wave": "wav",
        "audio/mpeg": "mp3",
        "audio/mp3": "mp3",
        "audio/ogg": "ogg",
        "audio/opus": "ogg",
        "audio/flac": "flac",
        "audio/x-flac": "flac",
    }


def _refused(path: Path, content_type: str) -> str:
    with pytest.raises(AudioError) as caught:
        _encode(path, content_type)
    assert caught.value.code == "invalid_audio"
    return str(caught.value)


def test_bodies_that_are_not_what_they_claim(
    recordings: dict[tuple[str, int], Path], tmp_path: Path
) -> None:
    text, noise, empty = tmp_path / "text", tmp_path / "noise", tmp_path / "empty"
    text.write_text("this is a transcript, not a recording\n" * 20)
    noise.write_bytes(b"\x00" + random.Random(7).randbytes(20_000))
    empty.write_bytes(b"")
    nine = tmp_path / "nine.wav"
    _write_wav(nine, channels=9, frames=1600)

    not_audio = "declared audio/wav but the body is not wav, mp3, ogg or flac"
    assert _refused(text, "audio/wav") == not_audio
    assert _refused(noise, "audio/ogg").startswith("declared audio/ogg but the body is not")
    assert _refused(empty, "audio/wav") == "empty body"
    mp3, wav = recordings["mp3", 1], recordings["wav", 1]
    assert _refused(mp3, "audio/flac") == "declared audio/flac but the body is mp3"
    assert _refused(wav, "audio/mpeg") == "declared audio/mpeg but the body is wav"
    assert _refused(recordings["flac", 1], "audio/ogg") == "declared audio/ogg but the body is flac"
    assert _refused(nine, "audio/wav") == "9 channels; at most 8 are supported"


def test_tags_that_are_not_utf8_do_not_matter(pydub_ffmpeg: None, tmp_path: Path) -> None:
    tagged = tmp_path / "tagged.flac"
    segment = Sine(LEFT_HZ).to_audio_segment(SECONDS * 1000, -6.0)
    segment.export(tagged, format="flac", tags={"title": "Anrufer XXXX"}).close()
    body = tagged.read_bytes()
    assert b"XXXX" in body
    tagged.write_bytes(body.replace(b"XXXX", b"\xff\xfe\xff\xfe"))  # latin-1 junk
    _, encoding, _ = _encode(tagged, "audio/flac")
    assert encoding.duration_s == pytest.approx(SECONDS, abs=TOLERANCE_S)


def test_header_only_wav_has_zero_duration(tmp_path: Path) -> None:
    path = tmp_path / "header.wav"
    _write_wav(path, channels=1, frames=0)
    assert _refused(path, "audio/wav") == "zero duration: no audio samples"


@pytest.mark.parametrize("channels", [1, 2])
def test_wav_cut_in_half_keeps_what_is_there(
    recordings: dict[tuple[str, int], Path], tmp_path: Path, channels: int
) -> None:
    # The header still promises 3 s; the samples present are stored with their real length.
    body = recordings["wav", channels].read_bytes()
    half = tmp_path / "half.wav"
    half.write_bytes(body[: len(body) // 2])
    _, encoding, data = _encode(half, "audio/wav")
    assert encoding.duration_s == pytest.approx(SECONDS / 2, abs=TOLERANCE_S)
    assert duration_of_ogg(data) == pytest.approx(encoding.duration_s, abs=0.001)
    assert _decoded(data)[0] == channels


def _damaged(body: bytes, damage: str) -> bytes:
    size, garbage = len(body), random.Random(damage).randbytes(len(body) // 3)
    if damage == "half":
        return body[: size // 2]
    if damage == "garbage-middle":
        return body[: size // 3] + garbage + body[size // 3 + len(garbage) :]
    return body[:200]  # little more than the headers


@pytest.mark.parametrize("damage", ["half", "garbage-middle", "headers-only"])
@pytest.mark.parametrize("case", DAMAGEABLE, ids=lambda c: c.name)
def test_damaged_bodies_are_refused_or_shorter(
    recordings: dict[tuple[str, int], Path], tmp_path: Path, case: Case, damage: str
) -> None:
    path = tmp_path / f"damaged.{case.export}"
    path.write_bytes(_damaged(recordings[case.name, 2].read_bytes(), damage))
    outcome = _encode_or_refusal(path, case.content_type)
    if isinstance(outcome, AudioError):
        assert outcome.code == "invalid_audio"
        return
    _, encoding, data = outcome
    # What decoded cleanly is stored as valid Ogg/Opus of its real, shorter length.
    assert encoding.duration_s is not None
    assert 0 < encoding.duration_s <= SECONDS + TOLERANCE_S
    assert _decoded(data)[2] == pytest.approx(encoding.duration_s, abs=0.001)


def test_duration_of_ogg_reads_files_and_refuses_other_data(
    recordings: dict[tuple[str, int], Path], tmp_path: Path
) -> None:
    _, encoding, data = _encode(recordings["mp3", 2], "audio/mpeg")
    stored = tmp_path / "stored.opus"
    stored.write_bytes(data)
    assert duration_of_ogg(stored) == encoding.duration_s
    with pytest.raises(ValueError, match="not an Ogg/Opus stream"):
        duration_of_ogg(recordings["ogg-vorbis", 1])
    with pytest.raises(ValueError, match="no final page"):
        duration_of_ogg(data[:-10])


# Runs in a child process so that its peak RSS is this encoding alone. The peak is the
# kernel's high-water mark, reset once warm (ru_maxrss would not do: it carries the
# parent's RSS over from the fork).
_MEMORY_CHILD = """
import json, sys, time
from pathlib import Path
from recorder.audio import probe, to_ogg_opus

def kib(field):
    status = Path("/proc/self/status").read_text()
    return int(status.split(field + ":")[1].split()[0]) * 1024

warm, big = Path(sys.argv[1]), Path(sys.argv[2])
for _ in to_ogg_opus(warm, probe(warm, "audio/wav")):
    pass  # libraries and codecs loaded before the baseline
Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark to now
baseline = kib("VmRSS")
started = time.perf_counter()
encoding = to_ogg_opus(big, probe(big, "audio/wav"))
size = sum(len(piece) for piece in encoding)
seconds = time.perf_counter() - started
print(json.dumps({"baseline": baseline, "peak": kib("VmHWM"), "seconds": seconds,
                  "audio_s": encoding.duration_s, "size": size}))
"""


def test_ten_minutes_encode_in_constant_memory(tmp_path: Path) -> None:
    big, warm = tmp_path / "ten-minutes.wav", tmp_path / "warm.wav"
    _write_wav(big, channels=1, frames=600 * 48_000, rate=48_000)  # 55 MiB, written per second
    _write_wav(warm, channels=1, frames=48_000, rate=48_000)
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(warm), str(big)],
        capture_output=True,
        check=True,
        cwd=ROOT,
        text=True,
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    growth_mib = (figures["peak"] - figures["baseline"]) / 2**20
    assert figures["audio_s"] == pytest.approx(600.0, abs=TOLERANCE_S)
    # Far below the 55 MiB file: reading it whole, or keeping the output, would fail.
    assert growth_mib < 20, f"peak RSS grew by {growth_mib:.1f} MiB"
    print(
        f"10 min mono 48 kHz WAV ({big.stat().st_size / 2**20:.0f} MiB) -> "
        f"{figures['size'] / 2**20:.2f} MiB Ogg/Opus in {figures['seconds']:.1f} s "
        f"({figures['audio_s'] / figures['seconds']:.0f} s of audio per s), "
        f"RSS +{growth_mib:.1f} MiB over {figures['baseline'] / 2**20:.0f} MiB"
    )
