"""Vendor-style SIPREC bodies (``fixtures/*.body``) and what callrec must read from each.

A fixture file is a ``Content-Type`` line (and optionally ``X-Line-Ends: lf``), a blank
line, then the body with ``{port0}``/``{port1}`` where the RTP ports go. Files are kept with
LF line ends; :func:`load` sends CRLF, as SIP does, unless the fixture says ``lf``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DIRECTORY = Path(__file__).with_name("fixtures")


@dataclass(frozen=True)
class Expected:
    """What the body must give: the call's session id, the parties, the channel order.

    ``aors`` lists each participant's AORs in the metadata's order; ``channels`` is
    ``channel_order`` (m= indexes, channel 0 first); ``channel_aors`` the first AOR of the
    party sending each channel (None where the metadata does not say). ``metadata`` is
    ``"readable"``, ``"unreadable"`` (record from the SDP alone) or ``"none"``.
    """

    session_id: str | None
    aors: tuple[tuple[str, ...], ...]
    channels: tuple[int, ...]
    channel_aors: tuple[str | None, ...]
    metadata: str = "readable"
    streams: int = 2


EXPECTED: dict[str, Expected] = {
    "oracle_acme": Expected(
        session_id="a84b4c76e66710a84b4c76e66710a84b",
        aors=(("sip:+14155550100@192.0.2.10",), ("sip:+14155550199@192.0.2.20",)),
        channels=(0, 1),
        channel_aors=("sip:+14155550100@192.0.2.10", "sip:+14155550199@192.0.2.20"),
    ),
    "cisco_cube": Expected(
        session_id="ab30317f1a784dc48ff824d0d3715d86",
        aors=(("sip:+4930901820@127.0.0.1",), ("sip:+4989123456@127.0.0.1",)),
        # The first participant sends label 5, the second m= line: channels swap.
        channels=(1, 0),
        channel_aors=("sip:+4930901820@127.0.0.1", "sip:+4989123456@127.0.0.1"),
    ),
    "ribbon_sonus": Expected(
        session_id=None,
        aors=(("sip:+33142685300@127.0.0.1",), ("sip:+33612345678@127.0.0.1;user=phone",)),
        channels=(0, 1),
        channel_aors=("sip:+33142685300@127.0.0.1", "sip:+33612345678@127.0.0.1;user=phone"),
    ),
    "avaya_sbce": Expected(
        session_id="7f3e2d1c6b5a49788796a5b4c3d2e1f0",
        aors=(("sip:+61299998888@127.0.0.1",), ("tel:+61412345678",)),
        channels=(0, 1),
        channel_aors=("sip:+61299998888@127.0.0.1", "tel:+61412345678"),
    ),
    "broadworks": Expected(
        session_id=None,
        aors=(("sip:+18005550123@as.example.net",), ("tel:+18885550177",)),
        channels=(0, 1),
        channel_aors=("sip:+18005550123@as.example.net", "tel:+18885550177"),
    ),
    "metaswitch": Expected(
        session_id="5d3e8a1f0c9b47e2a6d4b2c1e0f9a8b7",
        aors=(
            ("tel:+442079460000", "sip:+442079460000@127.0.0.1;user=phone"),
            ("tel:+447700900123",),
        ),
        channels=(0, 1),
        channel_aors=("tel:+442079460000", "tel:+447700900123"),
    ),
    "audiocodes": Expected(
        session_id="1cab0d1e6c5f45b2a8e90123456789ab",
        aors=(("+27215550100@127.0.0.1",), ("+27825550199@127.0.0.1",)),
        channels=(0, 1),
        channel_aors=("+27215550100@127.0.0.1", "+27825550199@127.0.0.1"),
    ),
    "opensips_freeswitch": Expected(
        session_id="3f2504e0-4f89-11d3-9a0c-0305e82c3301@127.0.0.1",
        aors=(("sip:+5511987654321@127.0.0.1",), ("sip:+551130001000@127.0.0.1",)),
        channels=(0, 1),
        channel_aors=("sip:+5511987654321@127.0.0.1", "sip:+551130001000@127.0.0.1"),
    ),
    "gtd_extra_part": Expected(
        session_id="6c9f1e2d3b4a59687a8b9cad0e1f2031",
        aors=(("sip:+33142685300@127.0.0.1",), ("sip:+33298765432@127.0.0.1",)),
        channels=(0, 1),
        channel_aors=("sip:+33142685300@127.0.0.1", "sip:+33298765432@127.0.0.1"),
    ),
    "no_closing_delimiter": Expected(
        session_id="9a8b7c6d5e4f40318293a4b5c6d7e8f9",
        aors=(("sip:+12125550111@127.0.0.1",), ("sip:+12125550122@127.0.0.1",)),
        channels=(0, 1),
        channel_aors=("sip:+12125550111@127.0.0.1", "sip:+12125550122@127.0.0.1"),
    ),
    "unescaped_ampersand": Expected(
        session_id=None,
        aors=(),
        channels=(0, 1),
        channel_aors=(None, None),
        metadata="unreadable",
    ),
    "forked_leg": Expected(
        session_id=None, aors=(), channels=(0,), channel_aors=(None,), metadata="none", streams=1
    ),
}
# A metadata-only UPDATE for the oracle_acme call: a transfer replaces its second party.
UPDATE = "metadata_update"
TWO_STREAM = tuple(name for name, expected in EXPECTED.items() if expected.streams == 2)


def load(name: str, *, port0: int = 40000, port1: int = 40002) -> tuple[str, bytes]:
    """``(content_type, body)`` of a fixture with its RTP ports filled in."""
    text = (DIRECTORY / f"{name}.body").read_text(encoding="utf-8")
    head, _, body = text.partition("\n\n")
    headers = dict(line.split(": ", 1) for line in head.splitlines())
    body = body.replace("{port0}", str(port0)).replace("{port1}", str(port1))
    if headers.get("X-Line-Ends") != "lf":
        body = body.replace("\n", "\r\n")
    return headers["Content-Type"], body.encode("utf-8")
