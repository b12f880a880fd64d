"""``callrec evidence pack`` and ``callrec evidence verify`` through a real process."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from storage.signing import SigningKey
from tests.recorder.test_cli import _assert_one_clear_line, _env, _run


def _rezipped(source: Path, target: Path, name: str, body: bytes) -> Path:
    """A copy of the pack with one member's bytes replaced."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(buffer, "w") as copy:
        for info in original.infolist():
            copy.writestr(info.filename, body if info.filename == name else original.read(info))
    target.write_bytes(buffer.getvalue())
    return target


def test_pack_then_verify_then_refuse_altered(tmp_path: Path) -> None:
    env = _env(tmp_path / "data")  # embedded defaults: SQLite, generated keys
    assert (
        _run(env, "clients", "create", "acme", "--name", "Acme", "--country", "MA").returncode == 0
    )
    granted = _run(
        env,
        *("consent", "grant", "acme", "--purpose", "research", "--notice", "contract"),
        *("--granted-by", "DPO", "--evidence", "contract #1"),
    )
    assert granted.returncode == 0, granted.stderr
    pack = tmp_path / "out" / "acme.zip"
    made = _run(
        env,
        *("evidence", "pack", "--client", "acme", "--from", "2020-01-01", "--to", "2100-01-01"),
        *("--out", str(pack)),
    )
    assert made.returncode == 0, made.stderr
    assert "signed by key SHA256:" in made.stdout
    assert (tmp_path / "data" / "signing.key").exists()
    fingerprint = made.stdout.split("signed by key ")[1].split()[0]

    verified = _run(env, "evidence", "verify", str(pack))
    assert verified.returncode == 0, verified.stderr
    assert "intact" in verified.stdout
    assert f"signed by key {fingerprint}, the expected key" in verified.stdout

    # The key is reused: a second pack names the same signer.
    again = _run(
        env,
        *("evidence", "pack", "--from", "2020-01-01", "--to", "2100-01-01"),
        *("--out", str(tmp_path / "all.zip")),
    )
    assert again.returncode == 0, again.stderr
    assert f"signed by key {fingerprint}" in again.stdout

    with zipfile.ZipFile(pack) as archive:
        ledger = archive.read("consent/ledger.json")
    altered = _rezipped(pack, tmp_path / "altered.zip", "consent/ledger.json", ledger + b" ")
    refused = _run(env, "evidence", "verify", str(altered))
    assert refused.returncode == 1
    assert "file consent/ledger.json changed" in refused.stderr
    assert "Traceback" not in refused.stderr

    other = SigningKey.generate()
    other_pem = tmp_path / "other.pem"
    other_pem.write_text(other.public.pem)
    wrong_key = _run(env, "evidence", "verify", str(pack), "--public-key", str(other_pem))
    assert wrong_key.returncode == 1
    assert f"signed by key {fingerprint}, not by the expected key" in wrong_key.stderr
    # Elsewhere, with no key of its own, it verifies and says who signed it.
    elsewhere = _run(_env(tmp_path / "elsewhere"), "evidence", "verify", str(pack))
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "not compared with any expected key" in elsewhere.stdout
    assert not (tmp_path / "elsewhere" / "signing.key").exists()
    # An installation whose CALLREC_SIGNING_KEY is another key does not take it as its own.
    other_env = _env(tmp_path / "data", signing_key=other.to_pem())
    assert _run(other_env, "evidence", "verify", str(pack)).returncode == 1

    _assert_one_clear_line(
        _run(
            env,
            *("evidence", "pack", "--client", "nobody", "--from", "2020-01-01"),
            *("--to", "2100-01-01", "--out", str(tmp_path / "x.zip")),
        ),
        "no client nobody",
    )
    _assert_one_clear_line(
        _run(
            env,
            *("evidence", "pack", "--from", "2026-02-01", "--to", "2026-01-01"),
            *("--out", str(tmp_path / "x.zip")),
        ),
        "'from' must come before 'to'",
    )
    assert not (tmp_path / "x.zip").exists()
    missing = _run(env, "evidence", "verify", str(tmp_path / "x.zip"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    not_a_key = _run(env, "evidence", "verify", str(pack), "--public-key", str(pack))
    _assert_one_clear_line(not_a_key, "public key")
