"""The contract lives in the project: docs/ is linked from the README and names every route."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from recorder.openapi import api_routes

ROOT = Path(__file__).resolve().parents[2]
PAGES = (
    "architecture.md",
    "http-api.md",
    "consent-and-retention.md",
    "evidence.md",
    "operations.md",
    "siprec-integration.md",
    "webhooks.md",
)


def test_readme_leads_to_the_docs_and_nowhere_users_cannot_go() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "(docs/README.md)" in readme
    assert "DESIGN.md" not in readme
    assert "shared folder" not in readme
    index = (ROOT / "docs" / "README.md").read_text()
    for page in PAGES:
        assert f"({page})" in index, page
        text = (ROOT / "docs" / page).read_text()
        assert "DESIGN.md" not in text and "shared/" not in text, page
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if not target.startswith("http"):
                assert (ROOT / "docs" / target).exists(), f"{page} links {target}"


def test_every_route_is_in_the_http_api_page(client: TestClient) -> None:
    page = (ROOT / "docs" / "http-api.md").read_text()
    missing = [
        f"{method} {route.path_format}"
        for route in api_routes(client.app.routes)  # type: ignore[attr-defined]
        for method in sorted(route.methods or ())
        if f"`{method} {route.path_format}`" not in page
    ]
    assert not missing, "routes missing from docs/http-api.md:\n" + "\n".join(missing)
