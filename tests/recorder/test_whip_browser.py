"""A real browser publishes over WHIP: headless Chromium, its fake microphone playing a tone.

The page is served from another origin than the gateway, so the browser's CORS checks
run as they would for an integrator's page. Chromium is told to offer its loopback
address as a plain host candidate (no mDNS name), and the gateway offers only
127.0.0.1, so media stays on loopback.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import struct
import subprocess
import threading
import time
import wave
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from recorder.app import create_app
from storage.backend import StorageBackend
from storage.embedded_s3 import EmbeddedS3
from tests.recorder.conftest import Tenant, backend_settings, call_body, make_tenant
from tests.recorder.tones import decode_channels, dominant_hz

TONE_HZ = 600.0  # a whole number of periods in the file, so its loop has no seam
PUBLISH_S = 3.0

PAGE = r"""<!doctype html>
<html><body><script>
const report = (what) => fetch("/done", {method: "POST", body: JSON.stringify(what)});
(async () => {
  const gateway = %(gateway)s, url = %(whip_url)s, key = %(key)s, seconds = %(seconds)s;
  const candidates = [];
  try {
    const stream = await navigator.mediaDevices.getUserMedia({audio: true});
    const pc = new RTCPeerConnection({iceServers: []});
    pc.onicecandidate = (e) => { if (e.candidate) candidates.push(e.candidate.candidate); };
    for (const track of stream.getAudioTracks()) pc.addTransceiver(track, {direction: "sendonly"});
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((done) => {  // every candidate in the offer: the gateway takes no trickle
      if (pc.iceGatheringState === "complete") return done();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
    });
    // Media to loopback only: the offer keeps only the UDP candidates on 127.0.0.1.
    const offer = pc.localDescription.sdp.split("\r\n").filter((line) =>
      !line.startsWith("a=candidate:") || / udp \d+ 127\.0\.0\.1 /i.test(line)).join("\r\n");
    const times = {posting: performance.now()};  // the session runs between POST and DELETE
    const posted = await fetch(gateway + url, {
      method: "POST",
      headers: {"Authorization": "Bearer " + key, "Content-Type": "application/sdp"},
      body: offer,
    });
    if (posted.status !== 201) throw new Error("POST " + posted.status + " " + await posted.text());
    times.posted = performance.now();
    const location = posted.headers.get("Location");
    await pc.setRemoteDescription({type: "answer", sdp: await posted.text()});
    await new Promise((done, fail) => {
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === "connected") done();
        if (pc.connectionState === "failed") fail(new Error("ICE failed"));
      };
    });
    await new Promise((done) => setTimeout(done, seconds * 1000));
    // Every pair either side used, as addresses: what went where.
    const stats = await pc.getStats(), used = [];
    stats.forEach((s) => {
      const busy = s.requestsSent || s.requestsReceived || s.responsesReceived || s.bytesSent;
      if (s.type === "candidate-pair" && busy) {
        used.push({local: stats.get(s.localCandidateId).address,
                   remote: stats.get(s.remoteCandidateId).address, bytesSent: s.bytesSent,
                   responsesReceived: s.responsesReceived,
                   requestsReceived: s.requestsReceived});
      }
    });
    times.deleting = performance.now();
    const deleted = await fetch(gateway + location, {
      method: "DELETE", headers: {"Authorization": "Bearer " + key},
    });
    times.deleted = performance.now();
    const ended = await deleted.json();
    pc.close();
    await report({ok: deleted.status === 200, ended, candidates, offer, used, times});
  } catch (e) {
    await report({ok: false, error: String(e), candidates});
  }
})();
</script></body></html>
"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium not installed: apt-get install chromium (CI installs it)")
    return found


def _tone_wav(path: Path, hz: float, seconds: float = 1.0, rate: int = 48_000) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(
            b"".join(
                struct.pack("<h", int(12000 * math.sin(2 * math.pi * hz * n / rate)))
                for n in range(int(seconds * rate))
            )
        )
    return path


class _Page:
    """The integrator's page on its own origin, and the report it posts back."""

    def __init__(self, html: str) -> None:
        self.html, self.report = html.encode(), threading.Event()
        self.result: dict[str, Any] = {}
        page = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page.html)))
                self.end_headers()
                self.wfile.write(page.html)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                page.result = json.loads(body)
                self.send_response(204)
                self.end_headers()
                page.report.set()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __enter__(self) -> _Page:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def browser_backend(
    s3_server: EmbeddedS3, database_url: str, tmp_path: Path, now: datetime
) -> Iterator[StorageBackend]:
    settings = backend_settings(s3_server, database_url, tmp_path, ice_addresses=["127.0.0.1"])
    backend = StorageBackend(settings)
    backend.start(now=now)
    yield backend
    backend.stop()


@pytest.fixture
def gateway(browser_backend: StorageBackend) -> Iterator[str]:
    """The gateway behind a real uvicorn on a free loopback port: a browser can reach it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(create_app(browser_backend), log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


def test_a_browser_publishes_a_tone_over_whip(
    browser_backend: StorageBackend, gateway: str, tmp_path: Path
) -> None:
    chromium = _chromium()
    with TestClient(create_app(browser_backend), raise_server_exceptions=False) as client:
        tenant: Tenant = make_tenant(client)
        decided = client.post(
            "/v1/calls", json=call_body("browser-1", channel="whip"), headers=tenant.integrator
        )
        assert decided.status_code == 200, decided.text
        key = tenant.integrator["Authorization"].removeprefix("Bearer ")
        html = PAGE % {
            "gateway": json.dumps(gateway),
            "whip_url": json.dumps(decided.json()["whip_url"]),
            "key": json.dumps(key),
            "seconds": PUBLISH_S,
        }
        tone = _tone_wav(tmp_path / "tone.wav", TONE_HZ)
        with _Page(html) as page:
            browser = subprocess.Popen(
                [
                    chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}",
                    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                    f"--use-file-for-fake-audio-capture={tone}",
                    "--allow-loopback-in-peer-connection",
                    # Host candidates as addresses, not mDNS names nothing here resolves.
                    "--disable-features=WebRtcHideLocalIpsWithMdns",
                    page.url,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )  # fmt: skip
            try:
                reported = page.report.wait(timeout=PUBLISH_S + 60)
            finally:
                browser.terminate()
                try:
                    _, stderr = browser.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    browser.kill()
                    _, stderr = browser.communicate()
            assert reported, f"the page never reported: {stderr.decode(errors='replace')[-2000:]}"
        result = page.result
        assert result["ok"], result
        # Chromium gathers every address (loopback included, none behind an mDNS name);
        # the page offers only its loopback ones, and no pair either side used left it.
        gathered = {c.split()[4] for c in result["candidates"]}
        assert "127.0.0.1" in gathered and not any(a.endswith(".local") for a in gathered)
        offered = [
            line.split()[4] for line in result["offer"].split("\r\n") if "candidate:" in line
        ]
        assert offered and set(offered) == {"127.0.0.1"}, offered
        # Chromium checks from all its addresses, each to the gateway's 127.0.0.1; the
        # gateway answers only its loopback peer, so media flows on loopback alone.
        used = result["used"]
        assert {pair["remote"] for pair in used} == {"127.0.0.1"}, used
        answered = [p for p in used if p["responsesReceived"] or p["requestsReceived"]]
        assert {pair["local"] for pair in answered} == {"127.0.0.1"}, used
        assert all(p["bytesSent"] == 0 for p in used if p["local"] != "127.0.0.1"), used
        ended = result["ended"]
        assert ended["state"] == "ended" and ended["recording_id"], ended
        recording = client.get(
            f"/v1/recordings/{ended['recording_id']}", headers=tenant.client_admin
        ).json()
        assert recording["state"] == "stored"
        assert recording["channels"] == 1
        # The session's clock ran at least from the POST's answer to the DELETE's sending,
        # at most from the one's sending to the other's answer (milliseconds, the page's).
        times = result["times"]
        shortest = (times["deleting"] - times["posted"]) / 1000
        longest = (times["deleted"] - times["posting"]) / 1000
        assert shortest - 0.02 <= recording["duration_s"] <= longest + 0.02, (times, recording)
        assert recording["duration_s"] >= PUBLISH_S
        audio = client.get(f"/v1/recordings/{recording['id']}/audio", headers=tenant.client_admin)
        assert audio.status_code == 200, audio.text
    channels = decode_channels(audio.content)
    assert len(channels) == 1
    hz = dominant_hz(channels[0][48_000 : 48_000 * 2])
    assert hz == pytest.approx(TONE_HZ, abs=5), hz
