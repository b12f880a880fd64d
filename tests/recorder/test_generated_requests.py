"""Requests generated from the OpenAPI document, with each role's key, against the real app.

Every operation the document describes gets bodies, paths and queries drawn from its
own schemas (and, with each key, the call hook gets enough valid calls to decide many).
No answer may be a 5xx, and every answer must be one the document lists for that
operation, with its content type and its schema. The run is derandomized: the same
requests every time, so a failure found here is found again.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

# Loaded here, while the suite is collected by one thread: loaded lazily by the first
# load of a schema, these modules were compiled (pytest rewrites a plugin's modules)
# while the app's threads ran, and CPython 3.11 keeps the compiler's recursion depth
# per process, not per thread: a compile racing another one raised "SystemError: AST
# constructor recursion depth mismatch".
from schemathesis.specs.openapi import schemas as _loaded_with_the_suite  # noqa: F401
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from recorder.audio import SUPPORTED_TYPES
from tests.recorder.conftest import ADMIN, auth, call_body, make_tenant, tone_wav

# The upload's body is bytes under an audio media type: sent as it is generated.
schemathesis.serializer.alias(list(SUPPORTED_TYPES), "application/octet-stream")
# A WHIP offer is text; generated ones are junk SDP that must get a clear 4xx.
schemathesis.serializer.alias("application/sdp", "text/plain")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
ROLES = ("admin", "compliance", "client_admin", "integrator", "none")
# Examples per operation and role: 35 operations × 5 roles × 8 is well over 1,000 requests.
EXAMPLES = 8
# Requests that break the schema on purpose, per operation and role: the key still
# decides first (401, 403), and what the caller may ask gets a documented 4xx.
NEGATIVE_EXAMPLES = 4
CALL_HOOK_EXAMPLES = 60


# One-party jurisdictions of the rule book: seeded into most generated call-hook bodies,
# since a code drawn at random is almost never in the book (all-party: the caller is
# asked first), and "recorded" is a path the test must reach.
ONE_PARTY = ("US-NY", "US-TX", "GB")


def _seeded(cases: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    def seed(drawn: tuple[Any, str | None]) -> Any:
        case, jurisdiction = drawn
        if jurisdiction is not None and isinstance(case.body, dict):
            case.body["jurisdiction"] = jurisdiction
        return case

    return st.tuples(cases, st.sampled_from((*ONE_PARTY, None))).map(seed)


# Operations whose seeded ids would end the run's world (the tenant, its grant, a key).
UNSEEDED = {
    "POST /v1/clients/{client}/offboard",
    "POST /v1/clients/{client}/consents/{grant}/revoke",
}


def _world(client: TestClient, tmp_path: Path) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Each role's key, and ids that exist (seeded into half the paths, for their 2xx)."""
    acme = make_tenant(client, "acme", notice="announcement")
    compliance = auth(
        client.post("/v1/api-keys", json={"role": "compliance"}, headers=ADMIN).json()["key"]
    )
    decision = client.post("/v1/calls", json=call_body("c-seed"), headers=acme.integrator)
    assert decision.json()["record"], decision.text
    upload = client.put(
        "/v1/calls/c-seed/recording",
        content=tone_wav(tmp_path / "seed.wav", seconds=0.5).read_bytes(),
        headers={**acme.integrator, "Content-Type": "audio/wav"},
    )
    recording = upload.json()["id"]
    hold = client.post(
        "/v1/legal-holds", json={"reason": "seed", "recording_ids": [recording]}, headers=compliance
    )
    request = client.post(
        "/v1/subject-requests",
        json={"client_id": "acme", "kind": "access", "phone": "+212612345678"},
        headers=acme.client_admin,
    )
    keys = {
        "admin": ADMIN,
        "compliance": compliance,
        "client_admin": acme.client_admin,
        "integrator": acme.integrator,
        "none": {},
    }
    seeds = {
        "client": "acme",
        "call_id": "c-seed",
        "recording_id": recording,
        "hold_id": hold.json()["id"],
        "request_id": request.json()["id"],
    }
    return keys, seeds


def _strategy(
    operation: Any, label: str, seeds: dict[str, str], mode: GenerationMode
) -> st.SearchStrategy[Any]:
    generated = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.NEGATIVE:
        return generated
    if label == "POST /v1/calls":
        return _seeded(generated)
    names = {p.name for p in operation.path_parameters}
    known = {name: seeds[name] for name in names if name in seeds}
    if not known or label in UNSEEDED:
        return generated
    return st.one_of(generated, operation.as_strategy(path_parameters=known))


def _refusal(operation: dict[str, Any], role: str) -> int | None:
    """The status a role must get whatever it sends: 401 without a key, 403 outside x-roles."""
    if "security" not in operation:
        return None
    if role == "none":
        return 401
    return None if role in operation["x-roles"] else 403


@pytest.mark.timeout(900)
def test_generated_requests_get_documented_answers(client: TestClient, tmp_path: Path) -> None:
    keys, seeds = _world(client, tmp_path)
    # Built once and kept by the app: the loader below then reads it well within its
    # 10 s even on a loaded machine.
    document = client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app, timeout=120)
    sent: Counter[str] = Counter()
    statuses: Counter[tuple[str, int]] = Counter()
    decisions: Counter[str] = Counter()

    for result, mode in itertools.product(schema.get_all_operations(), GenerationMode):
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        hook = label == "POST /v1/calls"
        if mode is GenerationMode.NEGATIVE and not (operation.body or operation.path_parameters):
            continue  # nothing in it to get wrong
        documented = document["paths"][operation.path][operation.method.lower()]
        for role in ROLES:
            headers, refusal = keys[role], _refusal(documented, role)
            examples = NEGATIVE_EXAMPLES if mode is GenerationMode.NEGATIVE else EXAMPLES

            @settings(
                max_examples=CALL_HOOK_EXAMPLES if hook and mode.is_positive else examples,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=_strategy(operation, label, seeds, mode))
            def send(case: Any) -> None:
                # Names from the loop are read before it moves on: send() runs right here.
                if not headers and case.headers:  # noqa: B023
                    # No key means none: drop what was generated for the bearer scheme.
                    case.headers = {
                        k: v for k, v in case.headers.items() if k.lower() != "authorization"
                    }
                response = case.call(headers=headers)  # noqa: B023
                sent[f"{role} {mode.value}"] += 1  # noqa: B023
                statuses[(label, response.status_code)] += 1  # noqa: B023
                # Negative cases may break the key too: judge by the key actually sent.
                sent_key = response.request.headers.get("Authorization")
                if refusal is not None and sent_key == headers.get("Authorization"):  # noqa: B023
                    assert response.status_code == refusal, (role, label, response.text)  # noqa: B023
                if hook and response.status_code == 200:  # noqa: B023
                    decisions[response.json()["reason"]] += 1
                case.validate_response(response, checks=CHECKS, headers=headers)  # noqa: B023

            send()

    total = sum(sent.values())
    print(f"\n{total} generated requests; by role {dict(sent)}")
    print(f"call hook decisions: {dict(decisions)}")
    assert total >= 1000
    assert not [s for (_, s) in statuses if s >= 500]
    answered = {label for (label, status) in statuses if status < 300}
    print(f"{len(answered)} of {len({label for label, _ in statuses})} operations answered 2xx")
    assert len(answered) >= 20, sorted(answered)
    # The call hook's positive paths: decided calls, recorded ones among them.
    assert sum(decisions.values()) >= 20, decisions
    assert decisions["recorded"] >= 5, decisions
