"""No audio in the clear on disk, ever: a real gateway killed at each step of the path.

Each case runs ``callrec serve`` (SQLite and its own SeaweedFS, all under one data
folder), kills it with SIGKILL at one step of an upload or a download, looks at every
file under the data folder, starts the gateway again, stops it, and looks again.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import pytest
import urllib3

from tests.recorder.crashing_gateway import STEPS

ADMIN_KEY = "admin-" + secrets.token_urlsafe(24)
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
START_TIMEOUT_S = 90

# Magic numbers that open audio files, wherever they stand in a file. Each is long
# enough that random ciphertext does not produce it by chance.
_MAGIC = {
    "wav": re.compile(rb"(RIFF|RF64).{4}WAVE", re.S),
    "ogg": re.compile(rb"OggS\x00[\x00-\x07]"),  # capture pattern, version 0, header flags
    "flac": re.compile(rb"fLaC[\x00\x80]\x00\x00\x22"),  # then STREAMINFO, 34 bytes
    "id3": re.compile(rb"ID3[\x02-\x04]\x00"),
}
_MP3_SYNC = re.compile(rb"\xff[\xe2-\xff]", re.S)
_MP3_KBPS = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame_length(header: bytes) -> int:
    """Length of the MPEG audio Layer III frame with this header, or 0 if it is none."""
    if header[0] != 0xFF or header[1] & 0xE0 != 0xE0:  # the 11-bit frame sync
        return 0
    version, layer = (header[1] >> 3) & 3, (header[1] >> 1) & 3
    bitrate, rate, padding = header[2] >> 4, (header[2] >> 2) & 3, (header[2] >> 1) & 1
    if version == 1 or layer != 1 or bitrate in (0, 15) or rate == 3:
        return 0
    kbps = _MP3_KBPS[1 if version == 3 else 2][bitrate]
    factor = 144 if version == 3 else 72
    return factor * kbps * 1000 // _MP3_RATES[version][rate] + padding


def _has_mp3_frames(data: bytes, chain: int = 4) -> bool:
    """Whether ``chain`` MP3 frames follow one another somewhere in ``data``."""
    for match in _MP3_SYNC.finditer(data):
        at = match.start()
        for _ in range(chain):
            length = _mp3_frame_length(data[at : at + 3]) if at + 3 <= len(data) else 0
            if not length:
                break
            at += length
        else:
            return True
    return False


def audio_found(root: Path) -> list[str]:
    """Every file under ``root`` that holds audio in the clear, with what was found."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        kinds = [kind for kind, pattern in _MAGIC.items() if pattern.search(data)]
        kinds += ["mp3"] if _has_mp3_frames(data) else []
        if kinds:
            found.append(f"{path.relative_to(root)}: {', '.join(kinds)}")
    return found


def test_the_scan_finds_audio(tmp_path: Path, tone: dict[str, Path]) -> None:
    """The detector itself: each format is found, also mid-file; random bytes are not."""
    for name, source in tone.items():
        data = source.read_bytes()
        folder = tmp_path / name
        folder.mkdir()
        (folder / "x.bin").write_bytes(os.urandom(1000) + data[:8192])
        assert audio_found(folder), name
    mid_mp3 = tone["mp3"].read_bytes()[40_000:48_000]  # no ID3 tag: frames alone
    (tmp_path / "mp3" / "x.bin").write_bytes(os.urandom(999) + mid_mp3)
    assert audio_found(tmp_path / "mp3") == ["x.bin: mp3"]
    noise = tmp_path / "noise"
    noise.mkdir()
    (noise / "x.bin").write_bytes(os.urandom(8 * 1024 * 1024))
    assert audio_found(noise) == []


@pytest.fixture(scope="module")
def tone(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """20 s of a tone in each upload format (a body that arrives in many pieces)."""
    folder = tmp_path_factory.mktemp("tone")
    files = {}
    for name, codec in (("wav", []), ("mp3", []), ("flac", []), ("ogg", ["-c:a", "libvorbis"])):
        path = folder / f"tone.{name}"
        source = "sine=frequency=440:sample_rate=16000:duration=20"
        ffmpeg = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi"]
        subprocess.run([*ffmpeg, "-i", source, *codec, str(path)], check=True)
        files[name] = path
    return files


def _free_port() -> int:
    """A free port below the ephemeral range, where the embedded S3 takes its own."""
    while True:
        port = random.randrange(20_000, 30_000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


@dataclass
class Gateway:
    """One ``callrec serve`` process on a data folder."""

    process: subprocess.Popen[bytes]
    url: str

    def call(
        self, method: str, path: str, key: str = ADMIN_KEY, **kwargs: Any
    ) -> urllib3.BaseHTTPResponse:
        headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
        return urllib3.request(
            method, self.url + path, headers=headers, timeout=60, retries=False, **kwargs
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)

    def wait_killed(self) -> None:
        assert self.process.wait(timeout=60) == -signal.SIGKILL


@contextlib.contextmanager
def gateway(data_dir: Path, crash_at: str | None = None) -> Iterator[Gateway]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
    env.update(
        CALLREC_DATA_DIR=str(data_dir),
        CALLREC_ADMIN_KEY=ADMIN_KEY,
        CALLREC_HTTP_PORT=str(port),
        CALLREC_SIP_PORT="0",
        CALLREC_LOG_LEVEL="WARNING",
    )
    module = ["tests.recorder.crashing_gateway", crash_at] if crash_at else ["recorder"]
    process = subprocess.Popen(
        [sys.executable, "-m", *module, "serve"], env=env, cwd=Path(__file__).parents[2]
    )
    running = Gateway(process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, "the gateway exited while starting"
            assert time.monotonic() < deadline, "the gateway did not get ready"
            with contextlib.suppress(urllib3.exceptions.HTTPError):
                if running.call("GET", "/readyz").status == 200:
                    break
            time.sleep(0.2)  # polling a process that is starting: nothing to await
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _set_up(gw: Gateway) -> dict[str, str]:
    """A client with consent and an integrator key; returns the keys by role."""
    created = gw.call("POST", "/v1/clients", json={"id": "acme", "name": "Acme", "country": "MA"})
    assert created.status == 201, created.data
    keys = {
        role: gw.call("POST", "/v1/clients/acme/api-keys", json={"role": role}).json()["key"]
        for role in ("integrator", "client_admin")
    }
    grant = gw.call(
        "POST",
        "/v1/clients/acme/consents",
        keys["client_admin"],
        json={
            "purposes": ["research"],
            "notice": "contract",
            "granted_by": "DPO",
            "evidence": "contract #1",
        },
    )
    assert grant.status == 201, grant.data
    return keys


def _decide(gw: Gateway, keys: dict[str, str], call_id: str) -> None:
    answer = gw.call(
        "POST",
        "/v1/calls",
        keys["integrator"],
        json={
            "call_id": call_id,
            "direction": "inbound",
            "from": "+12125550100",
            "to": "+12125550199",
            "channel": "upload",
            "jurisdiction": "US-NY",
        },
    )
    assert answer.json()["record"] is True, answer.data


def _upload(
    gw: Gateway, keys: dict[str, str], call_id: str, body: Path
) -> urllib3.BaseHTTPResponse:
    kind = body.suffix.removeprefix(".")
    return gw.call(
        "PUT",
        f"/v1/calls/{call_id}/recording",
        keys["integrator"],
        body=body.read_bytes(),
        headers={"Content-Type": f"audio/{'mpeg' if kind == 'mp3' else kind}"},
    )


UPLOAD_STEPS = [s for s in STEPS if s.startswith("upload-")]
DOWNLOAD_STEPS = [s for s in STEPS if s.startswith("download-")]
FORMATS = ["wav", "mp3", "flac", "ogg"]


def _after_the_crash(data_dir: Path, keys: dict[str, str]) -> None:
    """Nothing in the clear now, nor after a restart; no recording left half-done."""
    assert audio_found(data_dir) == []
    with gateway(data_dir) as gw:
        listed = gw.call("GET", "/v1/recordings", keys["client_admin"]).json()["items"]
        assert all(r["state"] in ("stored", "failed") for r in listed), listed
        gw.stop()
    assert audio_found(data_dir) == []
    assert list((data_dir / "tmp").iterdir()) == []


@pytest.mark.parametrize("step", UPLOAD_STEPS)
def test_killed_during_an_upload(tmp_path: Path, tone: dict[str, Path], step: str) -> None:
    data_dir = tmp_path / "var"
    body = tone[FORMATS[UPLOAD_STEPS.index(step) % len(FORMATS)]]
    with gateway(data_dir, crash_at=step) as gw:
        keys = _set_up(gw)
        _decide(gw, keys, "c-1")
        with contextlib.suppress(urllib3.exceptions.HTTPError):
            _upload(gw, keys, "c-1", body)
        gw.wait_killed()
    _after_the_crash(data_dir, keys)


@pytest.mark.parametrize("step", DOWNLOAD_STEPS)
def test_killed_during_a_download(tmp_path: Path, tone: dict[str, Path], step: str) -> None:
    data_dir = tmp_path / "var"
    with gateway(data_dir) as gw:
        keys = _set_up(gw)
        _decide(gw, keys, "c-1")
        stored = _upload(gw, keys, "c-1", tone["wav"])
        assert stored.status == 201, stored.data
        gw.stop()
    with gateway(data_dir, crash_at=step) as gw:
        with contextlib.suppress(urllib3.exceptions.HTTPError):
            gw.call("GET", f"/v1/recordings/{stored.json()['id']}/audio", keys["client_admin"])
        gw.wait_killed()
    _after_the_crash(data_dir, keys)
