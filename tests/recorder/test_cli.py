"""The ``callrec`` command as ops run it: real processes, real SeaweedFS, real databases."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from storage.embedded_s3 import EmbeddedS3
from tests.conftest import drop_bucket, unique_bucket

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CALLREC = [sys.executable, "-m", "recorder"]


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


def _run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CALLREC, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _assert_one_clear_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("callrec:")]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0], lines[0]


def _external_s3(s3: EmbeddedS3, **overrides: str) -> dict[str, str]:
    s3_config = s3.config("cli-test")
    settings = {
        "s3_endpoint_url": str(s3_config.endpoint_url),
        "s3_access_key_id": s3_config.access_key_id,
        "s3_secret_access_key": s3_config.secret_access_key,
        "master_key": "A" * 43 + "=",
    }
    settings.update(overrides)
    return settings


def test_refuses_wrong_s3_credentials(s3_server: EmbeddedS3, tmp_path: Path) -> None:
    settings = _external_s3(s3_server, s3_secret_access_key="wrong-secret-0123456789")
    result = _run(_env(tmp_path, **settings), "serve", "--port", str(_free_port()))
    _assert_one_clear_line(result, "refused")


def test_refuses_unreachable_s3(s3_server: EmbeddedS3, tmp_path: Path) -> None:
    settings = _external_s3(s3_server, s3_endpoint_url=f"http://127.0.0.1:{_free_port()}")
    result = _run(_env(tmp_path, **settings), "serve", "--port", str(_free_port()))
    _assert_one_clear_line(result, "unreachable")


def test_refuses_unreachable_database(s3_server: EmbeddedS3, tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/nothing"
    settings = _external_s3(s3_server, database_url=url)
    result = _run(_env(tmp_path, **settings), "serve", "--port", str(_free_port()))
    _assert_one_clear_line(result, "database")


def test_refuses_placeholder_admin_key(tmp_path: Path) -> None:
    result = _run(_env(tmp_path, admin_key="changeme"), "serve")
    _assert_one_clear_line(result, "CALLREC_ADMIN_KEY")


@pytest.mark.parametrize("weak", ["aaaaaaaaaaaaaaaa", "abababababababababab", "abcdefghijklmnop"])
def test_refuses_a_low_entropy_admin_key(tmp_path: Path, weak: str) -> None:
    result = _run(_env(tmp_path, admin_key=weak), "serve")
    _assert_one_clear_line(result, "CALLREC_ADMIN_KEY")
    assert "low entropy" in result.stderr


def test_serve_on_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(_env(tmp_path / "var"), "serve", "--port", str(port))
    _assert_one_clear_line(result, "in use")
    assert not (tmp_path / "var" / "s3").exists(), "nothing started before the port was had"


def test_serve_turns_nagle_off_on_every_connection() -> None:
    from recorder.cli import _listen

    listener = _listen("127.0.0.1", 0)

    async def accept_one() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        async with await asyncio.start_server(connected, sock=listener):
            _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
            try:
                return await asyncio.wait_for(accepted, 10)
            finally:
                writer.close()
                await writer.wait_closed()

    # Otherwise an answer written in two pieces waits for the client's delayed ACK.
    assert asyncio.run(accept_one()) != 0


def test_refuses_a_database_url_without_a_master_key(s3_server: EmbeddedS3, tmp_path: Path) -> None:
    settings = _external_s3(s3_server, database_url=f"sqlite:///{tmp_path / 'x.db'}")
    settings.pop("master_key")
    result = _run(_env(tmp_path, **settings), "serve", "--port", str(_free_port()))
    _assert_one_clear_line(result, "CALLREC_MASTER_KEY")


def _get_json(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (local test URL)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_serve_on_embedded_defaults_then_stop(tmp_path: Path, stop_signal: signal.Signals) -> None:
    """What `make run` does: SQLite + its own SeaweedFS, ready, then a clean stop."""
    port = _free_port()
    process = subprocess.Popen(
        [*CALLREC, "serve"],
        env=_env(tmp_path / "var", http_port=str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        status, body = 0, {}
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status, body = _get_json(f"http://127.0.0.1:{port}/readyz")
            except OSError:
                time.sleep(0.2)
                continue
            if status == 200:
                break
        assert status == 200, body
        assert body["status"] == "ready"
        weeds = [
            p for p in psutil.Process(process.pid).children(recursive=True) if "weed" in p.name()
        ]
        assert weeds, "the embedded SeaweedFS runs as a child"
        assert (tmp_path / "var" / "callrec.db").exists()
        assert (tmp_path / "var" / "master.key").stat().st_mode & 0o777 == 0o600
        process.send_signal(stop_signal)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "Traceback" not in output
    for weed in weeds:
        assert not weed.is_running() or weed.status() == psutil.STATUS_ZOMBIE


def test_audit_verify_exit_codes(s3_server: EmbeddedS3, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    import sqlalchemy as sa

    from storage.audit import AuditLog
    from storage.db import create_db_engine, migrate, session_scope
    from storage.keyring import Keyring

    master = "B" * 43 + "="
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    engine = create_db_engine(url)
    migrate(engine)
    from storage.crypto import parse_master_key

    audit = AuditLog(Keyring(parse_master_key(master)).derive("audit-anchor"))
    for i in range(3):
        with session_scope(engine) as session:
            audit.append(session, kind="test", actor="t", now=datetime.now(UTC), data={"i": i})
    env = _env(tmp_path, database_url=url, master_key=master)
    ok = _run(env, "audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "intact: 3 events" in ok.stdout

    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE audit_events SET actor = 'x' WHERE seq = 2"))
    broken = _run(env, "audit", "verify")
    assert broken.returncode == 1
    assert "event 2" in broken.stderr
    engine.dispose()


def test_clients_keys_and_consent_commands(tmp_path: Path) -> None:
    env = _env(tmp_path)  # embedded defaults: SQLite and a generated master key
    created = _run(env, "clients", "create", "acme", "--name", "Acme", "--country", "ma")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["country"] == "MA"
    duplicate = _run(env, "clients", "create", "acme", "--name", "Acme", "--country", "MA")
    _assert_one_clear_line(duplicate, "already exists")
    bad = _run(env, "clients", "create", "Not A Slug", "--name", "X", "--country", "MA")
    _assert_one_clear_line(bad, "slug")

    issued = _run(env, "keys", "issue", "integrator", "--client", "acme")
    assert issued.returncode == 0, issued.stderr
    key = json.loads(issued.stdout)
    assert key["key"].startswith("crk_") and key["client_id"] == "acme"
    listed = _run(env, "keys", "list")
    assert key["id"] in listed.stdout and key["key"] not in listed.stdout

    granted = _run(
        env,
        "consent",
        "grant",
        "acme",
        "--purpose",
        "research",
        "--notice",
        "contract",
        "--granted-by",
        "DPO",
        "--evidence",
        "contract #1",
    )
    assert granted.returncode == 0, granted.stderr
    grant_id = json.loads(granted.stdout)["id"]
    assert grant_id in _run(env, "consent", "list", "acme").stdout
    revoked = _run(env, "consent", "revoke", "acme", grant_id, "--reason", "ended")
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in _run(env, "consent", "list", "acme").stdout
    unknown = _run(
        env,
        "consent",
        "grant",
        "acme",
        "--purpose",
        "gossip",
        "--notice",
        "contract",
        "--granted-by",
        "DPO",
        "--evidence",
        "x",
    )
    _assert_one_clear_line(unknown, "unknown purposes: gossip")
    assert _run(env, "audit", "verify").returncode == 0


def test_clients_siprec_command(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert _run(env, "clients", "create", "acme", "--name", "A", "--country", "MA").returncode == 0
    shown = _run(env, "clients", "siprec", "acme", "--show")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {"client_id": "acme", "networks": [], "jurisdiction": None}
    put = _run(
        env, "clients", "siprec", "acme", "--network", "192.0.2.9/24", "--jurisdiction", "gb"
    )
    assert put.returncode == 0, put.stderr
    expected = {"client_id": "acme", "networks": ["192.0.2.0/24"], "jurisdiction": "GB"}
    assert json.loads(put.stdout) == expected
    assert json.loads(_run(env, "clients", "siprec", "acme", "--show").stdout) == expected
    _assert_one_clear_line(
        _run(env, "clients", "siprec", "acme", "--network", "192.0.2.0/99"), "invalid network"
    )
    _assert_one_clear_line(
        _run(env, "clients", "siprec", "acme", "--jurisdiction", "Britain"), "invalid jurisdiction"
    )
    _assert_one_clear_line(_run(env, "clients", "siprec", "nobody", "--show"), "no client nobody")
    for ambiguous in (
        [],
        ["--show", "--network", "10.0.0.0/8"],
        ["--loopback-only", "--network", "10.0.0.0/8"],
    ):
        refused = _run(env, "clients", "siprec", "acme", *ambiguous)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, ambiguous
    assert json.loads(_run(env, "clients", "siprec", "acme", "--show").stdout) == expected


def test_purge_command(tmp_path: Path) -> None:
    env = _env(tmp_path)
    past = _run(env, "purge", "--as-of", "2000-01-01")
    _assert_one_clear_line(past, "in the past")
    nonsense = _run(env, "purge", "--as-of", "the day after never")
    assert nonsense.returncode == 2
    assert "Traceback" not in nonsense.stderr
    ahead = _run(env, "purge", "--as-of", "2099-01-01")
    _assert_one_clear_line(ahead, "in the future")
    assert "--dry-run" in ahead.stderr
    assert not (tmp_path / "s3").exists(), "refused before anything started"
    dry = _run(env, "purge", "--as-of", "2099-01-01", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would expire 0 purposes, would purge 0 recordings" in dry.stdout


def test_reconcile_reports_leftovers_and_cleans_them_when_asked(
    s3_server: EmbeddedS3, s3_admin: S3Client, tmp_path: Path
) -> None:
    from storage.objectstore import ObjectStore

    bucket = unique_bucket()
    env = _env(tmp_path, **_external_s3(s3_server, s3_bucket=bucket))
    with ObjectStore.from_config(s3_server.config(bucket)) as store:
        store.ensure_bucket()
        try:
            store.create_upload("acme/2026/11/28/rec_lost.ogg", tags={})  # its abort never came
            found = _run(env, "reconcile")
            assert found.returncode == 1, found.stderr
            assert "1 unfinished uploads" in found.stdout
            assert "unfinished upload: acme/2026/11/28/rec_lost.ogg" in found.stdout
            kept = _run(env, "reconcile", "--clean-older-than", "1d")  # too young to go
            assert kept.returncode == 1, kept.stderr
            assert "0 uploads aborted" in kept.stdout
            cleaned = _run(env, "reconcile", "--clean-older-than", "0s")
            assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
            assert "1 uploads aborted" in cleaned.stdout
            assert list(store.list_uploads()) == []
            again = _run(env, "reconcile")
            assert again.returncode == 0 and "0 unfinished uploads" in again.stdout
        finally:
            drop_bucket(s3_admin, bucket)


def test_report_of_an_unknown_client_is_one_line(tmp_path: Path) -> None:
    result = _run(_env(tmp_path), "report", "--format", "json", "--client", "nobody")
    _assert_one_clear_line(result, "no client nobody")
    assert result.stdout == ""


def test_make_report_writes_under_the_data_dir(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    bin_dir = Path(sys.executable).parent  # this interpreter's callrec; no install run
    make = shutil.which("make")
    if make is None:
        pytest.skip("make not installed")
    result = subprocess.run(
        [make, "-s", "-o", "install", "report", f"BIN={bin_dir}"],
        cwd=root, env=_env(tmp_path / "data"), capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    page = tmp_path / "data" / "retention-report.html"
    assert page.read_text().startswith("<!doctype html>"), result.stdout


def test_the_report_shows_the_last_reconcile(tmp_path: Path) -> None:
    env = _env(tmp_path)
    before = json.loads(_run(env, "report", "--format", "json").stdout)["reconciliation"]
    assert before["run"] is False
    reconciled = _run(env, "reconcile")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    after = json.loads(_run(env, "report", "--format", "json").stdout)["reconciliation"]
    assert (after["run"], after["ok"], after["orphans"], after["ghosts"]) == (True, True, 0, 0)
    assert after["checked_at"] is not None
