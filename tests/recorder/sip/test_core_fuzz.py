"""Generated request sequences: the core never raises, and all it sends is a SIP response."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.sip.core import Peer, RequestReceived, SipCore
from recorder.sip.message import SipResponse, parse
from tests.recorder.sip.messages import invite, request

CORPUS = [
    invite(),
    invite(transport="TCP"),
    request("ACK", to_tag="tag1", cseq=1),
    request("ACK", branch="z9hG4bK776asdhds", to_tag="tag1", cseq=1),
    request("BYE", to_tag="tag1", branch="z9hG4bKbye"),
    request("CANCEL", branch="z9hG4bK776asdhds", cseq=1),
    request("INVITE", to_tag="tag1", branch="z9hG4bKre"),
    request("UPDATE", to_tag="tag1", branch="z9hG4bKup", cseq=3),
    request("OPTIONS"),
    request("FOO"),
]
PEERS = [Peer("udp", "127.0.0.1", 5060), Peer("tcp", "127.0.0.1", 40000, 1)]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if kind == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from([b"\r\n", b";tag=", b",", b" ", b"<", b"\x00"]))
        else:
            del data[at : at + draw(st.integers(1, 30))]
    return bytes(data)


STEPS = st.lists(
    st.tuples(
        mutated(),
        st.sampled_from(PEERS),
        st.floats(0, 40),
        st.sampled_from([None, 100, 180, 200, 403, 487]),
    ),
    max_size=8,
)


@settings(
    max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(STEPS)
def test_the_core_takes_any_sequence_and_sends_only_responses(
    steps: list[tuple[bytes, Peer, float, int | None]],
) -> None:
    core = SipCore(local_host="127.0.0.1", local_port=5080, max_transactions=4)
    now = 0.0
    for data, peer, wait, answer in steps:
        now += wait
        core.tick(now)
        core.receive(data, peer, now)
        for event in core.take_events():
            if answer is not None and isinstance(event, RequestReceived):
                core.respond(event.transaction, answer, now=now)
        for _, sent in core.take_outgoing():
            assert isinstance(parse(sent), SipResponse)
        assert core.transactions <= 4
    for _ in range(1000):  # every timer runs out: nothing is kept for ever
        deadline = core.next_deadline()
        if deadline is None:
            break
        core.tick(deadline)
    core.take_outgoing()
    assert core.transactions == 0
    assert core.dialogs == 0
