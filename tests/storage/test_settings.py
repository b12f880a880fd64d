"""Settings that cannot be safe are refused before anything starts."""

from __future__ import annotations

import pytest

from storage.errors import ConfigError
from storage.settings import load_settings


@pytest.mark.parametrize(
    "weak",
    [
        "aaaaaaaaaaaaaaaa",
        "abababababababababab",
        "aabbccddaabbccdd",
        "abcdefghijklmnop",
        "zyxwvutsrqponmlk",
    ],
)
def test_a_guessable_admin_key_is_refused(weak: str) -> None:
    with pytest.raises(ConfigError, match="CALLREC_ADMIN_KEY"):
        load_settings(admin_key=weak)


@pytest.mark.parametrize("key", ["3f9a1c7e52b04d68", "admin-Xq2v9LrT0bWm4kZp"])
def test_a_generated_admin_key_is_accepted(key: str) -> None:
    assert load_settings(admin_key=key).admin_key is not None
