"""Each ``callrec`` command and its HTTP route run one operation: on the same data they
change the same rows, write the same audit events and do the same to recordings.

Two tenants are set up alike, ``web`` through the routes and ``shell`` through the
commands; after each step the two sides' outcomes are compared, with their ids (and
times, which the command line takes from the real clock) put aside.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from recorder.cli import app as cli_app
from storage.audit import AuditEvent
from storage.backend import StorageBackend
from storage.catalog import Recording
from storage.errors import CallrecError
from tests.recorder.conftest import ADMIN, Clock, auth, call_body, tone_wav

GRANT = {
    "purposes": ["research", "improvement"],
    "notice": "contract",
    "granted_by": "Data protection officer",
    "evidence": "contract #42",
}
# Times, and the day folders of object keys (two uploads may straddle midnight).
_TIME = re.compile(r"\d{4}([-/])\d{2}\1\d{2}([T ][0-9:.]+(Z|[+-]\d{2}:?\d{2})?)?")


@dataclass
class Outcome:
    """What a command or a request came to: its output, or the code it was refused with."""

    output: str = ""
    error: str | None = None

    def json(self) -> Any:
        assert self.error is None, self.error
        return json.loads(self.output)


class Shell:
    """``callrec`` on the test backend's database and bucket, run in this process."""

    def __init__(self, backend: StorageBackend) -> None:
        s = backend.settings
        assert s.master_key is not None and s.s3_secret_access_key is not None
        self.env = {
            "CALLREC_DATA_DIR": str(s.data_dir),
            "CALLREC_DATABASE_URL": s.resolved_database_url,
            "CALLREC_MASTER_KEY": s.master_key.get_secret_value(),
            "CALLREC_S3_ENDPOINT_URL": str(s.s3_endpoint_url),
            "CALLREC_S3_ACCESS_KEY_ID": str(s.s3_access_key_id),
            "CALLREC_S3_SECRET_ACCESS_KEY": s.s3_secret_access_key.get_secret_value(),
            "CALLREC_S3_BUCKET": s.s3_bucket,
            "CALLREC_LOG_LEVEL": "WARNING",
        }
        self.runner = CliRunner()

    def __call__(self, *args: str) -> Outcome:
        result = self.runner.invoke(cli_app, list(args), env=self.env)
        if isinstance(result.exception, CallrecError):
            return Outcome(error=result.exception.code)
        assert result.exit_code == 0, (args, result.output, result.exception)
        return Outcome(output=result.stdout)


class Web:
    """The routes, on a clock kept at the real time (the command line's clock)."""

    def __init__(self, client: TestClient, clock: Clock) -> None:
        self.client, self.clock = client, clock

    def __call__(self, method: str, path: str, headers: dict[str, str], **kw: Any) -> Outcome:
        self.clock.now = datetime.now(UTC)
        response = self.client.request(method, path, headers=headers, **kw)
        if response.status_code >= 400:
            return Outcome(error=response.json()["error"])
        return Outcome(output=response.text)


class Ledger:
    """The audit events each side wrote since the last look, with ids put aside."""

    def __init__(self, backend: StorageBackend) -> None:
        self.engine, self.seen, self.names = backend.engine, 0, {}

    def name(self, **found: str) -> None:
        """Known ids: each is shown by its role (``web`` and ``shell`` both as ``client``)."""
        self.names.update({value: f"<{role}>" for role, value in found.items()})

    def new(self) -> dict[str, list[tuple[Any, ...]]]:
        with Session(self.engine) as session:
            events = session.exec(
                select(AuditEvent).where(AuditEvent.seq > self.seen).order_by(col(AuditEvent.seq))
            ).all()
        if events:
            self.seen = events[-1].seq
        sides: dict[str, list[tuple[Any, ...]]] = {"web": [], "shell": []}
        for event in events:
            side = "shell" if event.actor == "cli" else "web"
            data = {k: v for k, v in json.loads(event.data).items() if k not in ("sha256", "size")}
            sides[side].append(
                (
                    event.kind,
                    self._plain(event.client_id),
                    self._plain(event.subject),
                    self._plain(json.dumps(data, sort_keys=True)),
                )
            )
        return sides

    def _plain(self, text: str | None) -> str | None:
        if text is None:
            return None
        for value in sorted(self.names, key=len, reverse=True):
            text = text.replace(value, self.names[value])
        return _TIME.sub("<time>", text)

    def same(self) -> list[tuple[Any, ...]]:
        """Assert both sides wrote the same events (at least one); return them."""
        sides = self.new()
        assert sides["web"], "nothing written"
        assert sides["shell"] == sides["web"]
        return sides["web"]


def _upload(web: Web, integrator: dict[str, str], call_id: str, wav: Path) -> dict[str, Any]:
    answer = web("POST", "/v1/calls", integrator, json=call_body(call_id)).json()
    assert answer["reason"] == "recorded", answer
    stored = web(
        "PUT",
        f"/v1/calls/{call_id}/recording",
        {**integrator, "Content-Type": "audio/wav"},
        content=wav.read_bytes(),
    ).json()
    assert stored["state"] == "stored"
    return dict(stored)


def _rows(backend: StorageBackend, *recording_ids: str) -> list[tuple[str, str | None]]:
    with Session(backend.engine) as session:
        rows = [session.get(Recording, r) for r in recording_ids]
    return [(r.state, r.purpose_names or None) for r in rows if r is not None]


def _report_facts(report: dict[str, Any]) -> dict[str, Any]:
    purges = report["purges"]
    return {
        "by_cause": [
            (r["cause"], r["purged"], r["on_time"], r["late"], r["early"])
            for r in purges["by_cause"]
        ],
        "early": [e["cause"] for e in purges["early"]],
        "inventory": [(i["purpose"], i["age"], i["recordings"]) for i in report["inventory"]],
        "coverage": (report["coverage"]["live"], report["coverage"]["covered"]),
        "audit": (report["audit"]["checked"], report["audit"]["ok"]),
        "reconciliation": report["reconciliation"]["run"],
        "overdue": report["overdue"]["total"],
    }


@pytest.fixture
def sides(client: TestClient, clock: Clock, backend: StorageBackend) -> tuple[Web, Shell, Ledger]:
    return Web(client, clock), Shell(backend), Ledger(backend)


def test_each_command_does_what_its_route_does(
    sides: tuple[Web, Shell, Ledger], backend: StorageBackend, tmp_path: Path
) -> None:
    web, shell, ledger = sides
    ledger.name(client="web")
    ledger.name(client="shell")
    ledger.new()

    # clients create
    made = web("POST", "/v1/clients", ADMIN, json={"id": "web", "name": "Acme", "country": "ma"})
    shelled = shell("clients", "create", "shell", "--name", "Acme", "--country", "ma")
    assert [e[0] for e in ledger.same()] == ["client.created"]
    ignore = {"id", "created_at"}
    assert {k: v for k, v in made.json().items() if k not in ignore} == {
        k: v for k, v in shelled.json().items() if k not in ignore
    }
    # clients list
    listed = {c["id"] for c in web("GET", "/v1/clients", ADMIN).json()["items"]}
    assert listed == {"web", "shell"} and all(c in shell("clients", "list").output for c in listed)

    # clients siprec: set, show, and a bad network refused alike without a change
    body = {"networks": ["192.0.2.7/24", "2001:db8::/32"], "jurisdiction": "ma"}
    web_siprec = web("PUT", "/v1/clients/web/siprec", ADMIN, json=body).json()
    shell_siprec = shell(
        "clients", "siprec", "shell", "--network", "192.0.2.7/24", "--network", "2001:db8::/32",
        "--jurisdiction", "ma",
    ).json()  # fmt: skip
    assert [e[0] for e in ledger.same()] == ["client.siprec_set"]
    assert web_siprec == {
        "client_id": "web",
        "networks": ["192.0.2.0/24", "2001:db8::/32"],
        "jurisdiction": "MA",
    }
    assert shell_siprec == {**web_siprec, "client_id": "shell"}
    assert web("GET", "/v1/clients/web/siprec", ADMIN).json() == web_siprec
    assert shell("clients", "siprec", "shell", "--show").json() == shell_siprec
    bad_network = (
        web("PUT", "/v1/clients/web/siprec", ADMIN, json={"networks": ["192.0.2.0/33"]}),
        shell("clients", "siprec", "shell", "--network", "192.0.2.0/33"),
    )
    assert [side.error for side in bad_network] == ["invalid_network", "invalid_network"]
    web("PUT", "/v1/clients/web/siprec", ADMIN, json={"networks": []}).json()
    assert shell("clients", "siprec", "shell", "--loopback-only").json() == {
        "client_id": "shell",
        "networks": [],
        "jurisdiction": None,
    }
    assert [e[0] for e in ledger.same()] == ["client.siprec_set"]

    # keys issue, for each client role
    keys: dict[str, dict[str, dict[str, Any]]] = {"web": {}, "shell": {}}
    for role in ("integrator", "client_admin"):
        keys["web"][role] = web(
            "POST", "/v1/clients/web/api-keys", ADMIN, json={"role": role}
        ).json()
        keys["shell"][role] = shell("keys", "issue", role, "--client", "shell").json()
        ledger.name(**{f"{role}_key": keys["web"][role]["id"]})
        ledger.name(**{f"{role}_key": keys["shell"][role]["id"]})
        assert [e[0] for e in ledger.same()] == ["api_key.issued"]
    headers = {side: {r: auth(k["key"]) for r, k in mine.items()} for side, mine in keys.items()}

    # consent grant
    granted = web("POST", "/v1/clients/web/consents", headers["web"]["client_admin"], json=GRANT)
    flags = [f"--purpose={p}" for p in GRANT["purposes"]]
    shell_granted = shell(
        "consent",
        "grant",
        "shell",
        *flags,
        "--notice",
        "contract",
        "--granted-by",
        GRANT["granted_by"],
        "--evidence",
        GRANT["evidence"],
    )
    grants = {"web": granted.json(), "shell": shell_granted.json()}
    ledger.name(grant=grants["web"]["id"])
    ledger.name(grant=grants["shell"]["id"])
    assert [e[0] for e in ledger.same()] == ["consent.granted"]
    ignore = {"id", "client_id", "valid_from"}
    assert {k: v for k, v in grants["web"].items() if k not in ignore} == {
        k: v for k, v in grants["shell"].items() if k not in ignore
    }
    # consent list
    web_ledger = web("GET", "/v1/clients/web/consents", headers["web"]["client_admin"]).json()
    assert [g["status"] for g in web_ledger["grants"]] == ["active"]
    assert grants["shell"]["id"] in shell("consent", "list", "shell").output

    # A recording on each side, stored through the gateway: what revocation will reach.
    wav = tone_wav(tmp_path / "tone.wav", seconds=0.5)
    recordings = {
        side: _upload(web, headers[side]["integrator"], f"call-{side}", wav)
        for side in ("web", "shell")
    }
    ledger.name(recording=recordings["web"]["id"])
    ledger.name(recording=recordings["shell"]["id"])
    ledger.new()

    # consent revoke --purge-existing: purposes withdrawn, the recording purged, certified
    revoked = web(
        "POST",
        f"/v1/clients/web/consents/{grants['web']['id']}/revoke",
        headers["web"]["client_admin"],
        json={"reason": "contract ended", "purge_existing": True},
    )
    assert revoked.json()["status"] == "revoked"
    shell(
        "consent",
        "revoke",
        "shell",
        grants["shell"]["id"],
        "--reason",
        "contract ended",
        "--purge-existing",
    )
    events = ledger.same()
    assert [e[0] for e in events] == ["consent.revoked", "recording.purged"]
    assert '"reason": "revocation"' in events[1][3]
    assert _rows(backend, recordings["shell"]["id"]) == _rows(backend, recordings["web"]["id"])
    assert _rows(backend, recordings["web"]["id"]) == [("purged", None)]
    for side in ("web", "shell"):
        with Session(backend.engine) as session:
            row = session.get(Recording, recordings[side]["id"])
            assert row is not None
        assert backend.store.list_versions(row.object_key) == [], side

    # report: the same facts for each client, the audit chain walked by both
    web_report = web("GET", "/v1/reports/retention?client_id=web", ADMIN).json()
    shell_report = shell("report", "--format", "json", "--client", "shell").json()
    assert _report_facts(shell_report) == _report_facts(web_report)
    assert _report_facts(web_report)["early"] == ["revocation"]
    assert web_report["audit"]["checked"] is True
    ledger.new()  # the report's own reads write nothing worth comparing

    # keys revoke
    web("DELETE", f"/v1/api-keys/{keys['web']['integrator']['id']}", ADMIN).json()
    shell("keys", "revoke", keys["shell"]["integrator"]["id"])
    assert [e[0] for e in ledger.same()] == ["api_key.revoked"]
    assert web("POST", "/v1/calls", headers["shell"]["integrator"], json=call_body()).error == (
        "unauthorized"
    )

    # clients offboard
    web("POST", "/v1/clients/web/offboard", ADMIN).json()
    shell("clients", "offboard", "shell")
    assert [e[0] for e in ledger.same()][-1] == "client.offboarded"

    # Refusals are the same too, and change nothing.
    refused = {
        "keys issue for an offboarded client": (
            web("POST", "/v1/clients/web/api-keys", ADMIN, json={"role": "integrator"}),
            shell("keys", "issue", "integrator", "--client", "shell"),
        ),
        "grant for an offboarded client": (
            web("POST", "/v1/clients/web/consents", ADMIN, json=GRANT),
            shell(
                "consent",
                "grant",
                "shell",
                *flags,
                "--notice",
                "contract",
                "--granted-by",
                "x",
                "--evidence",
                "y",
            ),
        ),
        "revoke twice": (
            web(
                "POST",
                f"/v1/clients/web/consents/{grants['web']['id']}/revoke",
                ADMIN,
                json={"reason": "again"},
            ),
            shell("consent", "revoke", "shell", grants["shell"]["id"], "--reason", "again"),
        ),
        "ledger of an unknown client": (
            web("GET", "/v1/clients/nobody/consents", ADMIN),
            shell("consent", "list", "nobody"),
        ),
        "siprec for an offboarded client": (
            web("PUT", "/v1/clients/web/siprec", ADMIN, json={"networks": []}),
            shell("clients", "siprec", "shell", "--loopback-only"),
        ),
        "siprec of an unknown client": (
            web("GET", "/v1/clients/nobody/siprec", ADMIN),
            shell("clients", "siprec", "nobody", "--show"),
        ),
        "report of an unknown client": (
            web("GET", "/v1/reports/retention?client_id=nobody", ADMIN),
            shell("report", "--client", "nobody"),
        ),
    }
    codes = {what: (w.error, s.error) for what, (w, s) in refused.items()}
    assert codes == {
        "keys issue for an offboarded client": ("client_inactive", "client_inactive"),
        "grant for an offboarded client": ("client_inactive", "client_inactive"),
        "revoke twice": ("already_revoked", "already_revoked"),
        "ledger of an unknown client": ("not_found", "not_found"),
        "siprec for an offboarded client": ("client_inactive", "client_inactive"),
        "siprec of an unknown client": ("not_found", "not_found"),
        "report of an unknown client": ("not_found", "not_found"),
    }
    assert ledger.new() == {"web": [], "shell": []}


def test_why_answers_as_the_evidence_route(
    sides: tuple[Web, Shell, Ledger], backend: StorageBackend, tmp_path: Path
) -> None:
    web, shell, ledger = sides
    web("POST", "/v1/clients", ADMIN, json={"id": "web", "name": "Acme", "country": "ma"})
    keys = {
        role: auth(
            web("POST", "/v1/clients/web/api-keys", ADMIN, json={"role": role}).json()["key"]
        )
        for role in ("integrator", "client_admin")
    }
    web("POST", "/v1/clients/web/consents", keys["client_admin"], json=GRANT)
    stored = _upload(web, keys["integrator"], "why-1", tone_wav(tmp_path / "w.wav", seconds=0.5))
    web("GET", f"/v1/recordings/{stored['id']}/audio", keys["client_admin"])
    ledger.new()

    answer = web("GET", f"/v1/recordings/{stored['id']}/evidence", ADMIN).json()
    assert shell("why", stored["id"], "--json").json() == answer
    text = shell("why", stored["id"]).output
    assert text.splitlines()[0] == answer["kept_because"]
    assert (
        f"via GET /v1/recordings/{{recording_id}}/audio  [event {answer['reads'][0]['event_id']}]"
        in text
    )
    assert "audit chain through event" in text and "verifies" in text
    assert ledger.new() == {"web": [], "shell": []}, "asking why writes nothing"
    assert shell("why", "rec_missing").error == "not_found"
