"""The capture session over real Opus and G.711: consent, pauses, timeouts, in step."""

from __future__ import annotations

import io

import av
import pytest

from recorder.capture.codecs import OPUS, PCMA, PCMU, G711Codec
from recorder.capture.session import CaptureSession, CaptureState, EndCause, SessionClosed
from tests.recorder.capture.media import FRAME, RATE, decode, encode, rms

STEP = FRAME / RATE  # 20 ms


@pytest.fixture(scope="module")
def voices() -> tuple[list[bytes], list[bytes]]:
    return encode(4, 440), encode(4, 1750)


def _feed(
    session: CaptureSession[object],
    channel: int,
    packets: list[bytes],
    *,
    start: float,
    first: int = 0,
) -> bytes:
    """Send ``packets`` on ``channel`` in real time from ``start``, polling as a loop would."""
    out = b""
    for i, payload in enumerate(packets):
        now = start + i * STEP
        session.media(
            channel, ssrc=channel + 1, timestamp=(first + i) * FRAME, payload=payload, now=now
        )
        out += session.poll(now)
    return out


def test_a_two_party_call_decodes_to_its_true_duration(
    voices: tuple[list[bytes], list[bytes]],
) -> None:
    left, right = voices
    session: CaptureSession[object] = CaptureSession(OPUS, channels=2, now=0.0)  # type: ignore[arg-type]
    out = b""
    for i, (a, b) in enumerate(zip(left, right, strict=True)):
        now = i * STEP
        session.media(0, ssrc=1, timestamp=i * FRAME, payload=a, now=now)
        session.media(1, ssrc=2, timestamp=5000 + i * FRAME, payload=b, now=now + 0.003)
        out += session.poll(now + 0.003)
    end = len(left) * STEP
    out += session.end(end)

    channels, decoded = decode(out)
    assert session.state == CaptureState.ENDED and session.cause == EndCause.ENDED
    assert channels == 2
    assert abs(len(decoded[0]) / RATE - end) <= 0.020
    assert rms(decoded[0][RATE : 2 * RATE]) > 0.1
    assert rms(decoded[1][RATE : 2 * RATE]) > 0.1


def test_a_party_who_joins_late_is_silent_until_then_and_in_step(
    voices: tuple[list[bytes], list[bytes]],
) -> None:
    left, right = voices
    session: CaptureSession[object] = CaptureSession(OPUS, channels=2, now=0.0)  # type: ignore[arg-type]
    out = b""
    for i, a in enumerate(left):
        now = i * STEP
        session.media(0, ssrc=1, timestamp=i * FRAME, payload=a, now=now)
        if i >= 100:  # the second party's media starts 2 s in
            session.media(1, ssrc=2, timestamp=i * FRAME, payload=right[i - 100], now=now)
        out += session.poll(now)
    out += session.end(len(left) * STEP)

    _, decoded = decode(out)
    assert len(decoded[0]) == len(decoded[1])
    assert rms(decoded[1][10 * FRAME : 90 * FRAME]) < 0.001
    assert rms(decoded[1][110 * FRAME : 190 * FRAME]) > 0.1


def test_no_audio_is_kept_before_the_caller_accepts(
    voices: tuple[list[bytes], list[bytes]],
) -> None:
    left, _ = voices
    session: CaptureSession[object] = CaptureSession(  # type: ignore[arg-type]
        OPUS, channels=1, now=0.0, awaiting_caller_consent=True
    )
    before = _feed(session, 0, left[:100], start=0.0)  # 2 s while the notice plays
    assert before == b""
    assert session.dropped == 100

    session.caller_answered(accepted=True, now=2.0)
    after = _feed(session, 0, left[100:200], start=2.0, first=100)
    after += session.end(2.0 + 100 * STEP)

    _, decoded = decode(after)
    assert abs(len(decoded[0]) / RATE - 100 * STEP) <= 0.020  # only what followed consent


def test_a_refusal_discards_the_session() -> None:
    session: CaptureSession[object] = CaptureSession(  # type: ignore[arg-type]
        OPUS, channels=1, now=0.0, awaiting_caller_consent=True
    )
    session.caller_answered(accepted=False, now=1.0)

    assert session.state == CaptureState.DISCARDED
    assert session.cause == EndCause.CALLER_DECLINED
    with pytest.raises(SessionClosed):
        session.end(2.0)


def test_a_pause_leaves_silence_and_the_clock_runs_on(
    voices: tuple[list[bytes], list[bytes]],
) -> None:
    left, _ = voices
    session: CaptureSession[object] = CaptureSession(OPUS, channels=1, now=0.0)  # type: ignore[arg-type]
    out = b""
    for i, payload in enumerate(left):
        now = i * STEP
        if i == 50:
            session.pause()
        if i == 150:
            session.resume()
        session.media(0, ssrc=1, timestamp=i * FRAME, payload=payload, now=now)
        out += session.poll(now)
    out += session.end(len(left) * STEP)

    _, decoded = decode(out)
    assert abs(len(decoded[0]) / RATE - len(left) * STEP) <= 0.020
    assert rms(decoded[0][55 * FRAME : 145 * FRAME]) < 0.001  # card details never kept
    assert rms(decoded[0][160 * FRAME : 190 * FRAME]) > 0.1


def test_opt_out_discards_and_refuses_further_control(
    voices: tuple[list[bytes], list[bytes]],
) -> None:
    left, _ = voices
    session: CaptureSession[object] = CaptureSession(OPUS, channels=1, now=0.0)  # type: ignore[arg-type]
    _feed(session, 0, left[:50], start=0.0)

    session.opt_out()

    assert session.state == CaptureState.DISCARDED
    assert session.cause == EndCause.CALLER_OPTED_OUT
    assert session.poll(5.0) == b""
    with pytest.raises(SessionClosed):
        session.resume()


def test_a_publisher_that_vanishes_is_ended_by_the_media_timeout(
    voices: tuple[list[bytes], list[bytes]],
) -> None:
    left, _ = voices
    session: CaptureSession[object] = CaptureSession(  # type: ignore[arg-type]
        OPUS, channels=1, now=0.0, media_timeout_s=5.0
    )
    out = _feed(session, 0, left[:100], start=0.0)
    last = 99 * STEP

    out += session.poll(last + 4.9)
    assert session.live
    out += session.poll(last + 5.1)

    assert session.state == CaptureState.ENDED
    assert session.cause == EndCause.MEDIA_TIMEOUT
    _, decoded = decode(out)  # ends with the last packet, not with the timeout's silence
    assert abs(len(decoded[0]) / RATE - 100 * STEP) <= 0.020


def test_a_paused_sender_may_stop_sending_for_longer_than_the_media_timeout(
    voices: tuple[list[bytes], list[bytes]],
) -> None:
    left, _ = voices
    session: CaptureSession[object] = CaptureSession(  # type: ignore[arg-type]
        OPUS, channels=1, now=0.0, media_timeout_s=5.0
    )
    out = _feed(session, 0, left[:50], start=0.0)
    session.pause()  # an SRC's a=inactive: no packet until the resume
    out += session.poll(1.0 + 12.0)
    assert session.state == CaptureState.PAUSED
    session.resume()
    out += _feed(session, 0, left[50:100], start=13.0, first=650)  # its clock ran on
    assert session.live

    out += session.poll(13.0 + 50 * STEP + 5.1)  # a sender gone after the resume is noticed

    assert session.cause == EndCause.MEDIA_TIMEOUT
    _, decoded = decode(out)
    assert rms(decoded[0][int(3 * RATE) : int(10 * RATE)]) < 0.001  # the pause, as silence


def test_audio_after_a_pause_is_kept_whatever_the_senders_timestamps_skipped(
    voices: tuple[list[bytes], list[bytes]],
) -> None:
    left, _ = voices
    session: CaptureSession[object] = CaptureSession(OPUS, channels=1, now=0.0)  # type: ignore[arg-type]
    out = _feed(session, 0, left[:50], start=0.0)
    session.pause()  # 1.4 s of wall clock, while the sender's timestamps skip only 1 s
    out += session.poll(2.4)
    session.resume()
    out += _feed(session, 0, left[50:100], start=2.4, first=100)
    out += session.end(2.4 + 50 * STEP)

    assert sum(stats.late for stats in session.stats) == 0
    _, decoded = decode(out)
    assert rms(decoded[0][int(2.5 * RATE) : int(3.3 * RATE)]) > 0.1  # none of it lost


def test_the_maximum_duration_ends_the_session(voices: tuple[list[bytes], list[bytes]]) -> None:
    left, _ = voices
    session: CaptureSession[object] = CaptureSession(  # type: ignore[arg-type]
        OPUS, channels=1, now=0.0, max_duration_s=1.0
    )
    out = _feed(session, 0, left[:60], start=0.0)

    assert session.state == CaptureState.ENDED
    assert session.cause == EndCause.MAX_DURATION
    _, decoded = decode(out)
    assert abs(len(decoded[0]) / RATE - 1.0) <= 0.020


def test_malformed_payloads_are_dropped_and_counted(
    voices: tuple[list[bytes], list[bytes]],
) -> None:
    left, _ = voices
    session: CaptureSession[object] = CaptureSession(OPUS, channels=1, now=0.0)  # type: ignore[arg-type]
    session.media(0, ssrc=1, timestamp=0, payload=b"", now=0.0)
    session.media(0, ssrc=1, timestamp=0, payload=b"\x7b\x00", now=0.0)
    session.media(0, ssrc=1, timestamp=FRAME, payload=left[1], now=STEP)

    assert session.malformed == 2
    with pytest.raises(ValueError, match="no channel 3"):
        session.media(3, ssrc=1, timestamp=0, payload=left[0], now=0.0)


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=["pcmu", "pcma"])
def test_g711_channels_are_kept_as_they_came_in_an_au_stream(codec: G711Codec) -> None:
    session: CaptureSession[object] = CaptureSession(codec, channels=2, now=0.0)  # type: ignore[arg-type]
    out = b""
    for i in range(150):  # 3 s of 20 ms packets
        now = i * STEP
        session.media(0, ssrc=1, timestamp=i * 160, payload=bytes([0x10]) * 160, now=now)
        session.media(1, ssrc=2, timestamp=i * 160, payload=bytes([0x20]) * 160, now=now)
        out += session.poll(now)
    out += session.end(3.0)

    header, samples = out[:24], out[24:]
    assert header.startswith(b".snd")
    assert samples[:4] == bytes([0x10, 0x20, 0x10, 0x20])  # interleaved, untouched
    with av.open(io.BytesIO(out), format="au") as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == f"pcm_{'mulaw' if codec is PCMU else 'alaw'}"
        assert stream.codec_context.channels == 2
        decoded = sum(frame.samples for frame in container.decode(stream))
    assert abs(decoded / 8000 - 3.0) <= 0.020


def test_a_session_that_never_heard_a_packet_leaves_no_recording() -> None:
    session: CaptureSession[object] = CaptureSession(  # type: ignore[arg-type]
        OPUS, channels=1, now=0.0, media_timeout_s=5.0
    )
    assert session.poll(5.1) == b""  # ICE never completed: no media ever came

    assert session.state == CaptureState.DISCARDED
    assert session.cause == EndCause.MEDIA_TIMEOUT
