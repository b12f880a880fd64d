"""G.722 captured live: kept as RTP carried it, one Matroska track per party, and FFmpeg
(both PyAV's and imageio-ffmpeg's binary) decodes each track to 16 kHz of the call's length."""

from __future__ import annotations

import io
import math
import subprocess
from array import array
from pathlib import Path

import av
import imageio_ffmpeg
import pytest

from recorder.capture import mka
from recorder.capture.codecs import G722, G722_SILENCE, OPUS, PCMA, PCMU, codec_named
from recorder.capture.session import CaptureSession, CaptureState

AUDIO_RATE = 16_000
PACKET = 160  # bytes of G.722 in 20 ms: 320 samples at 16 kHz, 160 RTP ticks
STEP = 0.020


def encode(seconds: float, hz: float) -> list[bytes]:
    """Real G.722 from FFmpeg's encoder, cut in 20 ms RTP payloads."""
    encoder = av.CodecContext.create("g722", "w")
    encoder.sample_rate, encoder.layout, encoder.format = AUDIO_RATE, "mono", "s16"
    data = b""
    for start in range(0, int(seconds * AUDIO_RATE), 320):
        pcm = array(
            "h",
            (int(8000 * math.sin(2 * math.pi * hz * (start + n) / AUDIO_RATE)) for n in range(320)),
        )
        frame = av.AudioFrame(format="s16", layout="mono", samples=320)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate, frame.pts = AUDIO_RATE, start
        data += b"".join(bytes(p) for p in encoder.encode(frame))
    return [data[i : i + PACKET] for i in range(0, len(data), PACKET)]


def decode_g722(data: bytes) -> array[int]:
    """Raw G.722 through a fresh decoder, as 16-bit samples."""
    decoder = av.CodecContext.create("g722", "r")
    decoder.sample_rate, decoder.layout = AUDIO_RATE, "mono"
    out = array("h")
    for frame in decoder.decode(av.Packet(data)):
        out.frombytes(bytes(frame.planes[0])[: 2 * frame.samples])
    return out


def decode_tracks(data: bytes) -> list[array[int]]:
    """Every track of a Matroska file, decoded by PyAV, as 16-bit samples at 16 kHz."""
    with av.open(io.BytesIO(data), format="matroska") as container:
        streams = list(container.streams.audio)
        tracks: list[array[int]] = [array("h") for _ in streams]
        for packet in container.demux(streams):
            for frame in packet.decode():
                assert frame.sample_rate == AUDIO_RATE and frame.format.name == "s16"
                tracks[packet.stream.index].frombytes(bytes(frame.planes[0])[: 2 * frame.samples])
    return tracks


def rms(samples: array[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / max(len(samples), 1))


def tone_power(samples: array[int], hz: float) -> float:
    """The amplitude of one frequency in ``samples`` (a single DFT bin)."""
    re = sum(s * math.cos(2 * math.pi * hz * n / AUDIO_RATE) for n, s in enumerate(samples))
    im = sum(s * math.sin(2 * math.pi * hz * n / AUDIO_RATE) for n, s in enumerate(samples))
    return 2 * math.hypot(re, im) / len(samples)


@pytest.fixture(scope="module")
def voices() -> tuple[list[bytes], list[bytes]]:
    return encode(3, 440), encode(3, 1750)


def capture(left: list[bytes], right: list[bytes | None]) -> tuple[bytes, CaptureSession[bytes]]:
    """A two-party call in real time, 20 ms packets; ``None`` on the right is a lost packet."""
    session: CaptureSession[bytes] = CaptureSession(G722, channels=2, now=0.0)
    out = b""
    for i, (a, b) in enumerate(zip(left, right, strict=True)):
        now = i * STEP
        session.media(0, ssrc=1, timestamp=i * PACKET, payload=a, now=now)
        if b is not None:
            session.media(1, ssrc=2, timestamp=7000 + i * PACKET, payload=b, now=now + 0.002)
        out += session.poll(now + 0.002)
    return out + session.end(len(left) * STEP), session


def test_a_two_party_call_decodes_to_16_khz_of_its_length_each_party_on_its_track(
    voices: tuple[list[bytes], list[bytes]],
) -> None:
    left, right = voices
    out, session = capture(left, list(right))

    assert session.state == CaptureState.ENDED
    assert session.duration_s == pytest.approx(3.0)
    # Kept as it came: each party's G.722 bytes are in the file, untouched (a block per 10 ms).
    for packet in (left[75], right[75]):
        assert packet[:80] in out and packet[80:] in out
    first, second = decode_tracks(out)
    assert len(first) == len(second)
    assert abs(len(first) / AUDIO_RATE - 3.0) <= 0.020
    middle = slice(AUDIO_RATE, 2 * AUDIO_RATE)
    assert tone_power(first[middle], 440) > 4000 > 400 > tone_power(first[middle], 1750)
    assert tone_power(second[middle], 1750) > 4000 > 400 > tone_power(second[middle], 440)


def test_ffmpeg_itself_reads_both_tracks_at_16_khz(
    voices: tuple[list[bytes], list[bytes]], tmp_path: Path
) -> None:
    left, right = voices
    out, _ = capture(left, list(right))
    path = tmp_path / "call.mka"
    path.write_bytes(out)
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()

    for track in (0, 1):
        command = [ffmpeg, "-v", "error", "-i", str(path), "-map", f"0:a:{track}"]
        pcm = subprocess.run(
            [*command, "-f", "s16le", "-ac", "1", "-ar", str(AUDIO_RATE), "-"],
            capture_output=True,
            check=True,
        )
        assert pcm.stderr == b""
        assert abs(len(pcm.stdout) / 2 / AUDIO_RATE - 3.0) <= 0.020
    probe = subprocess.run([ffmpeg, "-i", str(path)], capture_output=True, check=False)
    streams = [line for line in probe.stderr.decode().splitlines() if "Stream #" in line]
    assert len(streams) == 2
    assert all("adpcm_g722" in line and "16000 Hz" in line and "mono" in line for line in streams)


def test_a_lost_stretch_is_silence_on_its_track_only(
    voices: tuple[list[bytes], list[bytes]],
) -> None:
    left, right = voices
    lossy: list[bytes | None] = list(right)
    lossy[50:100] = [None] * 50  # one second lost, from 1 s on
    out, _ = capture(left, lossy)

    first, second = decode_tracks(out)
    assert abs(len(second) / AUDIO_RATE - 3.0) <= 0.020
    # 20 ms after the gap opens the decoder has settled on the silence pattern.
    assert rms(second[int(1.02 * AUDIO_RATE) : 2 * AUDIO_RATE]) < 100
    assert rms(first[int(1.02 * AUDIO_RATE) : 2 * AUDIO_RATE]) > 4000
    assert tone_power(second[int(2.1 * AUDIO_RATE) :], 1750) > 4000


def test_the_silence_pattern_decodes_to_silence_from_any_state(
    voices: tuple[list[bytes], list[bytes]],
) -> None:
    silence = G722.silence()
    assert silence == bytes((G722_SILENCE,)) * 80 == bytes((0xFC,)) * 80
    assert set(decode_g722(silence * 10)) == {0}  # from a fresh decoder: exact zeros
    after_speech = decode_g722(b"".join(voices[0][:50]) + silence * 25)
    assert rms(after_speech[-AUDIO_RATE // 10 :]) < 100  # a residue below -50 dBFS


def test_a_file_cut_short_decodes_up_to_its_last_whole_block(
    voices: tuple[list[bytes], list[bytes]],
) -> None:
    left, right = voices
    out, _ = capture(left, list(right))
    cut = out[: len(out) * 2 // 3 + 7]  # mid-block, as a crash leaves a spool
    first, second = decode_tracks(cut)
    assert 1.9 <= len(first) / AUDIO_RATE <= 2.0
    assert abs(len(second) - len(first)) <= 160  # at most the one block the cut split


def test_one_track_per_channel_and_clusters_every_five_seconds() -> None:
    writer = mka.G722MatroskaWriter(3)
    data = writer.start()
    for _ in range(1200):  # 12 s of 10 ms steps
        data += writer.write([G722.silence()] * 3)
    assert writer.samples == 1200 * 80
    assert data.count(b"\x1f\x43\xb6\x75") == 3  # clusters at 0, 5 and 10 s
    assert len(decode_tracks(data)) == 3
    with pytest.raises(ValueError, match="differ in length"):
        writer.write([b"\xfc" * 80, b"\xfc" * 80, b"\xfc" * 160])
    with pytest.raises(ValueError, match="2 streams for 3 channels"):
        writer.write([b"\xfc" * 80] * 2)


@pytest.mark.parametrize("payload", [b"", b"\xfc" * 79, b"\xfc" * 170])
def test_a_payload_that_is_not_whole_10_ms_steps_is_refused(payload: bytes) -> None:
    with pytest.raises(ValueError, match="not a multiple of 10 ms"):
        G722.split(payload)


def test_g722_is_timed_on_its_8_khz_rtp_clock() -> None:
    assert (G722.rate, G722.slot, G722.container) == (8000, 80, "mka")
    assert G722.split(b"\x01" * 80 + b"\x02" * 80) == [b"\x01" * 80, b"\x02" * 80]


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("PCMU", PCMU),
        ("pcmu", PCMU),
        ("PCMA", PCMA),
        ("G722", G722),
        ("g722", G722),
        ("opus", OPUS),
        ("OPUS", OPUS),
        ("telephone-event", None),
        ("CN", None),
        ("G729", None),
        ("", None),
    ],
)
def test_sdp_encoding_names_map_to_live_codecs(name: str, codec: object) -> None:
    assert codec_named(name) is codec
