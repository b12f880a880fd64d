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


def test_rtp_ports_default_to_a_thousand() -> None:
    assert load_settings().rtp_port_range == (40000, 40999)


def test_rtp_ports_are_read_as_a_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLREC_RTP_PORTS", "20000-20001")
    assert load_settings().rtp_port_range == (20000, 20001)
    settings = load_settings(rtp_ports=" 30000 - 30000 ")
    assert (settings.rtp_ports, settings.rtp_port_range) == ("30000-30000", (30000, 30000))


@pytest.mark.parametrize(
    "ports", ["40999-40000", "80-1000", "1023-2000", "60000-65536", "40000", "a-b", "-1-5", ""]
)
def test_rtp_ports_out_of_order_or_range_are_refused(
    ports: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLREC_RTP_PORTS", ports or " ")
    with pytest.raises(ConfigError, match="CALLREC_RTP_PORTS"):
        load_settings()


WILDCARDS = ["0.0.0.0", "::", "[::]", "0:0::0"]  # noqa: S104 - the addresses refused


@pytest.mark.parametrize("host", WILDCARDS)
def test_an_unspecified_sip_host_is_refused(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # It would be the c= line of the SDP answers, where 0.0.0.0 means hold.
    monkeypatch.setenv("CALLREC_SIP_HOST", host)
    with pytest.raises(ConfigError, match=r"CALLREC_SIP_HOST: .*reach this gateway at"):
        load_settings()


@pytest.mark.parametrize("host", ["10.0.0.5", "::1", "callrec.example"])
def test_a_sip_host_the_srcs_can_reach_is_taken(host: str) -> None:
    assert load_settings(sip_host=host).sip_host == host
