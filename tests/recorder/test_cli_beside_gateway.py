"""Ops commands beside a running ``callrec serve``: they use its embedded S3, not their own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.recorder.conftest import ADMIN_KEY, call_body, tone_wav

CALLREC = [sys.executable, "-m", "recorder"]
ENDPOINT_FILE = Path("s3") / "endpoint.json"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _env(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
    env["CALLREC_DATA_DIR"] = str(data_dir)
    env["CALLREC_SIP_PORT"] = "0"  # an ephemeral SIPREC port: tests run side by side
    env.update({f"CALLREC_{k.upper()}": v for k, v in settings.items()})
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CALLREC, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _request(
    method: str, url: str, key: str, body: bytes | None = None, content_type: str = ""
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    if content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (local URL)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _post(url: str, key: str, data: dict[str, Any]) -> Any:
    status, answer = _request("POST", url, key, json.dumps(data).encode(), "application/json")
    assert status in (200, 201), answer
    return answer


class Gateway:
    """A ``callrec serve`` subprocess on embedded defaults under ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = _env(data_dir, admin_key=ADMIN_KEY)
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.process = subprocess.Popen(
            [*CALLREC, "serve", "--port", self.url.rsplit(":", 1)[1]],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "callrec serve not ready in time"
            time.sleep(0.1)
        pytest.fail(f"callrec serve exited: {self.process.communicate()[0]}")

    def store_a_recording(self, tmp_path: Path) -> str:
        admin = ADMIN_KEY
        _post(f"{self.url}/v1/clients", admin, {"id": "acme", "name": "Acme", "country": "MA"})
        keys = {
            role: _post(f"{self.url}/v1/clients/acme/api-keys", admin, {"role": role})["key"]
            for role in ("integrator", "client_admin")
        }
        grant = {
            "purposes": ["research"],
            "notice": "contract",
            "granted_by": "DPO",
            "evidence": "contract #1",
        }
        _post(f"{self.url}/v1/clients/acme/consents", keys["client_admin"], grant)
        decision = _post(f"{self.url}/v1/calls", keys["integrator"], call_body("call-1"))
        wav = tone_wav(tmp_path / "call.wav", seconds=0.5).read_bytes()
        status, recording = _request(
            "PUT", self.url + decision["upload_url"], keys["integrator"], wav, "audio/wav"
        )
        assert status == 201, recording
        return str(recording["id"])

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=30)
        return output


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    running = Gateway(tmp_path / "var")
    try:
        running.wait_ready()
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()
        running.process.wait()
        if running.process.stdout is not None:
            running.process.stdout.close()


def test_ops_commands_use_the_running_gateways_s3(gateway: Gateway, tmp_path: Path) -> None:
    published = json.loads((gateway.data_dir / ENDPOINT_FILE).read_text())
    assert published["pid"] == gateway.process.pid
    assert published["endpoint_url"].startswith("http://127.0.0.1:")
    gateway.store_a_recording(tmp_path)

    reconciled = _run(gateway.env, "reconcile")
    assert reconciled.returncode == 0, reconciled.stderr
    assert "1 objects, 1 stored recordings: 0 orphans, 0 ghosts" in reconciled.stdout
    purged = _run(gateway.env, "purge", "--dry-run")
    assert purged.returncode == 0, purged.stderr
    assert "would purge 0 recordings" in purged.stdout
    report = _run(gateway.env, "report", "--format", "json")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)
    verified = _run(gateway.env, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "audit chain intact" in verified.stdout

    # The commands left the gateway's S3 running, and a clean stop takes the file away.
    with urllib.request.urlopen(gateway.url + "/readyz", timeout=10) as response:  # noqa: S310
        assert response.status == 200
    output = gateway.stop()
    assert gateway.process.returncode == 0, output
    assert "Traceback" not in output
    assert not (gateway.data_dir / ENDPOINT_FILE).exists()


def test_a_file_left_by_a_killed_gateway_is_ignored(gateway: Gateway, tmp_path: Path) -> None:
    gateway.store_a_recording(tmp_path)
    weeds = psutil.Process(gateway.process.pid).children(recursive=True)
    os.kill(gateway.process.pid, signal.SIGKILL)
    gateway.process.wait()
    psutil.wait_procs(weeds, timeout=10)  # they die with their parent
    assert (gateway.data_dir / ENDPOINT_FILE).exists()

    reconciled = _run(gateway.env, "reconcile")
    assert reconciled.returncode == 0, reconciled.stderr
    assert "1 objects, 1 stored recordings" in reconciled.stdout
    # It started an S3 of its own on the data dir, which removed the stale file.
    assert not (gateway.data_dir / ENDPOINT_FILE).exists()
