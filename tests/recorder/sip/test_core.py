"""The SIP core's transactions and dialogs, driven with explicit time (nothing sleeps)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from recorder.sip.core import (
    Cancelled,
    Confirmed,
    Dialog,
    DialogEnded,
    Peer,
    RequestReceived,
    ServerTransaction,
    SipCore,
)
from recorder.sip.message import (
    Headers,
    SipRequest,
    SipResponse,
    format_reason,
    header_params,
    parse,
    parse_via,
    serialize,
)
from tests.recorder.sip.messages import invite, request

UDP = Peer("udp", "127.0.0.1", 5060)
TCP = Peer("tcp", "127.0.0.1", 40123, connection=7)


class Harness:
    """A core and the side of the recording client: send requests, read the answers."""

    def __init__(self, **options: Any) -> None:
        tags = (f"tag{n}" for n in itertools.count(1))
        self.core = SipCore(
            local_host="127.0.0.1", local_port=5080, new_tag=lambda: next(tags), **options
        )

    def send(self, data: bytes, now: float, peer: Peer = UDP) -> list[SipResponse]:
        self.core.receive(data, peer, now)
        return self.answers()

    def answers(self, to: Peer | None = None) -> list[SipResponse]:
        answers = []
        for destination, data in self.core.take_outgoing():
            if to is not None:
                assert destination == to
            message = parse(data)
            assert isinstance(message, SipResponse)
            answers.append(message)
        return answers

    def events(self) -> list[object]:
        return list(self.core.take_events())

    def request(self, data: bytes, now: float, peer: Peer = UDP) -> RequestReceived:
        """Send a request for the application; its answers sent at once go to ``immediate``."""
        self.core.receive(data, peer, now)
        self.immediate = self.answers()
        events = self.events()
        assert len(events) == 1 and isinstance(events[0], RequestReceived), events
        return events[0]

    def answered_call(self, now: float = 0.0, peer: Peer = UDP) -> tuple[Dialog, ServerTransaction]:
        tx = self.request(invite(transport=peer.transport.upper()), now, peer).transaction
        dialog = self.core.respond(
            tx, 200, now=now, body=b"v=0\r\n", content_type="application/sdp"
        )
        assert dialog is not None
        self.answers()
        return dialog, tx

    def run_until(self, end: float) -> list[tuple[float, SipResponse]]:
        """Tick at each deadline up to ``end``; the answers sent, with their times."""
        sent = []
        while (deadline := self.core.next_deadline()) is not None and deadline <= end:
            self.core.tick(deadline)
            sent += [(deadline, answer) for answer in self.answers()]
        return sent


def statuses(answers: list[SipResponse]) -> list[int]:
    return [a.status for a in answers]


def ack(to_tag: str, *, branch: str = "z9hG4bKack1", cseq: int = 1) -> bytes:
    return request("ACK", to_tag=to_tag, branch=branch, cseq=cseq)


def test_an_invite_gets_100_at_once_and_reaches_the_application() -> None:
    h = Harness()

    answers = h.send(invite(), 0.0)

    assert statuses(answers) == [100]
    assert "tag" not in header_params(answers[0].headers.get("to") or "")
    [event] = h.events()
    assert isinstance(event, RequestReceived)
    assert event.dialog is None
    assert event.transaction.request.method == "INVITE"
    assert event.transaction.peer == UDP


def test_the_2xx_makes_a_dialog_with_our_tag_and_contact() -> None:
    h = Harness()
    tx = h.request(invite(), 0.0).transaction

    dialog = h.core.respond(tx, 200, now=0.1, body=b"v=0\r\n", content_type="application/sdp")

    [ok] = h.answers(to=UDP)
    assert dialog is not None
    assert (dialog.call_id, dialog.local_tag, dialog.remote_tag) == (
        "a84b4c76e66710@src.example.com",
        "tag1",
        "1928301774",
    )
    assert ok.status == 200
    assert header_params(ok.headers.get("to") or "")["tag"] == "tag1"
    assert ok.headers.get("contact") == "<sip:acme@127.0.0.1:5080>"
    assert ok.headers.get("allow") == "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO"
    assert ok.headers.get("content-type") == "application/sdp"
    assert ok.headers.get("content-length") == "5"
    assert ok.body == b"v=0\r\n"
    assert ok.headers.get("cseq") == "1 INVITE"
    assert ok.headers.get("call-id") == "a84b4c76e66710@src.example.com"


def test_the_2xx_is_repeated_on_udp_doubling_to_t2_until_the_ack() -> None:
    h = Harness()
    dialog, _ = h.answered_call(0.0)

    sent = h.run_until(12.0)

    assert [t for t, _ in sent] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert {a.status for _, a in sent} == {200}
    assert h.send(ack("tag1"), 12.0) == []
    assert h.events() == [Confirmed(dialog)]
    assert h.run_until(100.0) == []
    assert h.core.transactions == 0  # dropped after lingering
    assert h.core.dialogs == 1


def test_with_no_ack_the_dialog_ends_after_64_t1() -> None:
    h = Harness()
    dialog, _ = h.answered_call(0.0)

    sent = h.run_until(31.9)
    assert len(sent) == 10  # 0.5, 1.5, 3.5, 7.5, then every 4 s up to 31.5
    assert h.events() == []

    h.run_until(32.0)

    assert h.events() == [DialogEnded(dialog, "no_ack")]
    assert (h.core.dialogs, h.core.transactions) == (0, 0)
    assert h.core.next_deadline() is None
    assert statuses(h.send(request("BYE", to_tag="tag1", branch="z9hG4bKbye"), 33.0)) == [481]


def test_a_retransmitted_invite_gets_the_last_answer_and_no_new_event() -> None:
    h = Harness()
    tx = h.request(invite(), 0.0).transaction

    assert statuses(h.send(invite(), 0.4)) == [100]
    assert h.events() == []

    h.core.respond(tx, 200, now=1.0)
    h.answers()
    again = h.send(invite(), 1.2)
    assert statuses(again) == [200]
    assert header_params(again[0].headers.get("to") or "")["tag"] == "tag1"
    assert h.events() == []


def test_a_refusal_is_repeated_until_its_ack_then_forgotten() -> None:
    h = Harness()
    tx = h.request(invite(), 0.0).transaction

    dialog = h.core.respond(
        tx, 403, now=0.0, headers=[("Reason", format_reason(403, "no_consent"))]
    )

    [refusal] = h.answers()
    assert dialog is None
    assert (refusal.status, refusal.reason) == (403, "Forbidden")
    assert refusal.headers.get("reason") == 'SIP;cause=403;text="no_consent"'
    assert "tag" in header_params(refusal.headers.get("to") or "")
    assert [t for t, _ in h.run_until(2.0)] == [0.5, 1.5]
    # The ACK for a non-2xx is in the INVITE's transaction: same branch (§17.1.1.3).
    assert h.send(ack("tag1", branch="z9hG4bK776asdhds"), 2.0) == []
    assert h.events() == []
    assert h.run_until(100.0) == []
    assert h.core.transactions == 0
    assert h.core.dialogs == 0


def test_an_unacknowledged_refusal_is_given_up_after_64_t1() -> None:
    h = Harness()
    tx = h.request(invite(), 0.0).transaction
    h.core.respond(tx, 486, now=0.0)
    h.answers()

    sent = h.run_until(40.0)

    assert len(sent) == 10
    assert h.core.transactions == 0
    assert h.events() == []


def test_cancel_before_the_answer_gets_200_and_the_invite_487() -> None:
    h = Harness()
    tx = h.request(invite(), 0.0).transaction

    answers = h.send(request("CANCEL", branch="z9hG4bK776asdhds", cseq=1), 0.5)

    assert [(a.status, a.headers.get("cseq")) for a in answers] == [
        (200, "1 CANCEL"),
        (487, "1 INVITE"),
    ]
    assert h.events() == [Cancelled(tx)]
    assert h.core.respond(tx, 200, now=0.6) is None  # too late: nothing is sent
    assert h.answers() == []
    assert statuses(h.send(request("CANCEL", branch="z9hG4bK776asdhds", cseq=1), 0.7)) == [200]
    assert h.send(ack("tag1", branch="z9hG4bK776asdhds"), 0.8) == []
    assert h.core.dialogs == 0


def test_cancel_after_the_answer_or_for_nothing() -> None:
    h = Harness()
    h.answered_call(0.0)

    assert statuses(h.send(request("CANCEL", branch="z9hG4bK776asdhds", cseq=1), 0.2)) == [200]
    assert statuses(h.send(request("CANCEL", branch="z9hG4bKother", cseq=1), 0.3)) == [481]
    assert h.events() == []
    assert h.core.dialogs == 1


@pytest.mark.parametrize("method", ["INVITE", "UPDATE", "INFO", "BYE"])
def test_in_dialog_requests_reach_the_application_with_their_dialog(method: str) -> None:
    h = Harness()
    dialog, _ = h.answered_call(0.0)
    h.send(ack("tag1"), 0.1)
    h.events()

    event = h.request(request(method, to_tag="tag1", branch=f"z9hG4bK{method}", cseq=2), 1.0)

    assert event.dialog is dialog
    assert statuses(h.immediate) == ([100] if method == "INVITE" else [])
    h.core.respond(event.transaction, 200, now=1.1)
    [ok] = h.answers()
    assert (ok.status, ok.headers.get("cseq")) == (200, f"2 {method}")
    assert header_params(ok.headers.get("to") or "")["tag"] == "tag1"


def test_after_bye_the_dialog_is_gone() -> None:
    h = Harness()
    dialog, _ = h.answered_call(0.0)
    h.send(ack("tag1"), 0.1)
    h.events()

    bye = h.request(request("BYE", to_tag="tag1", branch="z9hG4bKbye", cseq=2), 1.0)
    assert bye.dialog is dialog
    assert dialog.ended
    h.core.respond(bye.transaction, 200, now=1.0)
    assert statuses(h.answers()) == [200]

    assert statuses(h.send(request("BYE", to_tag="tag1", branch="z9hG4bKbye", cseq=2), 1.5)) == [
        200
    ]
    assert statuses(h.send(request("BYE", to_tag="tag1", branch="z9hG4bKbye2", cseq=3), 1.5)) == [
        481
    ]
    assert h.events() == []
    h.run_until(100.0)
    assert (h.core.dialogs, h.core.transactions) == (0, 0)


def test_a_bye_answers_the_pending_reinvite_487() -> None:
    h = Harness()
    h.answered_call(0.0)
    reinvite = h.request(request("INVITE", to_tag="tag1", branch="z9hG4bKre", cseq=2), 1.0)
    h.answers()

    h.core.receive(request("BYE", to_tag="tag1", branch="z9hG4bKbye", cseq=3), UDP, 2.0)

    assert [(a.status, a.headers.get("cseq")) for a in h.answers()] == [(487, "2 INVITE")]
    assert [type(e) for e in h.events()] == [RequestReceived]
    assert h.core.respond(reinvite.transaction, 200, now=2.1) is None


def test_a_second_reinvite_while_the_first_is_unanswered_gets_500_retry_after() -> None:
    h = Harness()
    h.answered_call(0.0)
    h.request(request("INVITE", to_tag="tag1", branch="z9hG4bKre1", cseq=2), 1.0)
    h.answers()

    [answer] = h.send(request("INVITE", to_tag="tag1", branch="z9hG4bKre2", cseq=3), 1.1)

    assert answer.status == 500
    assert answer.headers.get("retry-after") is not None
    assert h.events() == []


def test_a_reinvite_2xx_is_repeated_until_its_ack_and_confirmed() -> None:
    h = Harness()
    dialog, _ = h.answered_call(0.0)
    h.send(ack("tag1"), 0.1)
    h.events()
    reinvite = h.request(request("INVITE", to_tag="tag1", branch="z9hG4bKre", cseq=2), 1.0)
    h.answers()

    assert h.core.respond(reinvite.transaction, 200, now=1.0) is dialog
    [ok] = h.answers()
    assert ok.headers.get("contact") == "<sip:acme@127.0.0.1:5080>"
    assert [t for t, _ in h.run_until(2.0)] == [1.5]
    h.send(ack("tag1", branch="z9hG4bKack2", cseq=2), 2.0)
    assert h.events() == [Confirmed(dialog)]
    assert h.run_until(10.0) == []


def test_requests_for_unknown_dialogs_get_481_and_stray_acks_silence() -> None:
    h = Harness()
    for method in ("BYE", "UPDATE", "INFO", "INVITE"):
        data = request(method, to_tag="nope", branch=f"z9hG4bK{method}", cseq=5)
        assert statuses(h.send(data, 0.0)) == [481], method
    for method in ("BYE", "UPDATE", "INFO"):  # outside any dialog
        assert statuses(h.send(request(method, branch=f"z9hG4bKx{method}"), 0.0)) == [481]
    assert h.send(ack("nope"), 0.0) == []
    assert h.send(request("ACK", branch="z9hG4bKlone", cseq=1), 0.0) == []
    assert h.events() == []


def test_options_gets_200_with_what_we_allow_and_accept() -> None:
    h = Harness()

    [ok] = h.send(request("OPTIONS", uri="sip:127.0.0.1:5080"), 0.0)

    assert ok.status == 200
    assert "INVITE" in (ok.headers.get("allow") or "")
    assert ok.headers.get("accept") == (
        "application/sdp, application/rs-metadata+xml, multipart/mixed"
    )
    assert h.events() == []
    h.answered_call(1.0)
    assert statuses(h.send(request("OPTIONS", to_tag="tag2", branch="z9hG4bKo2"), 1.0)) == [200]


def test_unknown_methods_get_501_and_known_others_405() -> None:
    h = Harness()

    [unknown] = h.send(request("FROBNICATE", branch="z9hG4bKf"), 0.0)
    [register] = h.send(request("REGISTER", branch="z9hG4bKr"), 0.0)

    assert unknown.status == 501
    assert register.status == 405
    assert register.headers.get("allow") == "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO"
    assert h.events() == []


@pytest.mark.parametrize(
    ("missing", "status"),
    [
        (b"Call-ID: a84b4c76e66710@src.example.com\r\n", [400]),
        (b"From: <sip:src@127.0.0.1>;tag=1928301774\r\n", [400]),
        (b"To: <sip:acme@127.0.0.1:5080>\r\n", [400]),
        (b"CSeq: 2 OPTIONS\r\n", []),  # a 400 needs the CSeq to be matched: silence
        (b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK0001\r\n", []),
    ],
)
def test_missing_mandatory_headers(missing: bytes, status: list[int]) -> None:
    h = Harness()
    data = request("OPTIONS")
    assert missing in data

    answers = h.send(data.replace(missing, b""), 0.0)

    assert statuses(answers) == status
    assert h.events() == []
    assert h.core.transactions == 0


def test_a_cseq_method_that_is_not_the_requests_gets_400() -> None:
    h = Harness()

    [answer] = h.send(request("OPTIONS", cseq_method="INVITE"), 0.0)

    assert answer.status == 400
    assert "CSeq" in (answer.headers.get("warning") or "")


def test_a_request_the_parser_refuses_gets_400_when_its_head_names_enough() -> None:
    h = Harness()
    broken = request("OPTIONS").replace(b"Max-Forwards: 70", b"Max Forwards 70")

    [answer] = h.send(broken, 0.0)

    assert answer.status == 400
    assert answer.headers.get("cseq") == "2 OPTIONS"
    assert "bad header line" in (answer.headers.get("warning") or "")
    for junk in (b"\x00\x01\x02garbage", b"hello", request("OPTIONS")[:60], b"\r\n\r\n"):
        assert h.send(junk, 0.0) == []
    assert h.core.transactions == 0


def test_responses_are_ignored() -> None:
    h = Harness()

    assert h.send(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n\r\n", 0.0) == []
    assert h.events() == []


def test_answers_go_to_the_via_port_or_with_rport_to_the_source() -> None:
    h = Harness()
    source = Peer("udp", "127.0.0.1", 40000)

    h.core.receive(request("OPTIONS", port=5062), source, 0.0)
    [(plain, _)] = h.core.take_outgoing()
    h.core.receive(invite(port=5062), source, 0.0)  # its Via says rport
    [(rport, data)] = h.core.take_outgoing()

    assert plain == Peer("udp", "127.0.0.1", 5062)
    assert rport == Peer("udp", "127.0.0.1", 40000)
    via = parse_via(parse(data).headers.get("via") or "")
    assert (via.params["received"], via.params["rport"]) == ("127.0.0.1", "40000")
    assert via.branch == "z9hG4bK776asdhds"


def test_over_tcp_answers_use_the_connection_and_the_2xx_is_not_repeated() -> None:
    h = Harness()
    dialog, _ = h.answered_call(0.0, TCP)

    assert h.run_until(31.9) == []
    h.run_until(32.0)

    assert h.events() == [DialogEnded(dialog, "no_ack")]
    tx = h.request(invite(transport="TCP", branch="z9hG4bKtcp2", call_id="c2"), 40.0, TCP)
    h.core.respond(tx.transaction, 200, now=40.0)
    [(destination, data)] = h.core.take_outgoing()
    assert destination == TCP
    assert parse(data).headers.get("contact") == "<sip:acme@127.0.0.1:5080;transport=tcp>"
    h.send(request("ACK", to_tag="tag2", call_id="c2", branch="z9hG4bKa", cseq=1), 41.0, TCP)
    assert [type(e) for e in h.events()] == [Confirmed]
    h.run_until(41.0)
    assert h.core.transactions == 0  # nothing to absorb on TCP


def test_provisional_then_final_keep_one_tag() -> None:
    h = Harness()
    tx = h.request(invite(), 0.0).transaction
    h.answers()

    h.core.respond(tx, 180, now=0.1)
    dialog = h.core.respond(tx, 200, now=0.2)

    ringing, ok = h.answers()
    assert dialog is not None
    assert header_params(ringing.headers.get("to") or "")["tag"] == dialog.local_tag
    assert header_params(ok.headers.get("to") or "")["tag"] == dialog.local_tag
    assert statuses(h.send(invite(), 0.3)) == [200]


def test_an_unanswered_request_gets_500_in_the_end() -> None:
    h = Harness()
    h.request(invite(), 0.0)
    h.answers()

    sent = h.run_until(180.0)

    assert [(t, a.status) for t, a in sent] == [(180.0, 500)]


def test_a_dialog_ends_when_it_is_too_old() -> None:
    h = Harness(dialog_max_age=3600.0)
    dialog, _ = h.answered_call(0.0)
    h.send(ack("tag1"), 0.1)
    h.events()

    h.run_until(3600.0)

    assert h.events() == [DialogEnded(dialog, "expired")]
    assert h.core.dialogs == 0


def test_the_number_of_transactions_is_capped() -> None:
    h = Harness(max_transactions=3)
    for n in range(3):
        h.send(invite(branch=f"z9hG4bK{n}", call_id=f"c{n}"), 0.0)

    [busy] = h.send(invite(branch="z9hG4bK3", call_id="c3"), 0.0)

    assert busy.status == 503
    assert busy.headers.get("retry-after") == "5"
    assert h.core.transactions == 3


def test_many_calls_leave_nothing_behind() -> None:
    h = Harness()
    for n in range(500):
        now = n * 0.01
        tx = h.request(invite(branch=f"z9hG4bKi{n}", call_id=f"c{n}"), now).transaction
        dialog = h.core.respond(tx, 200, now=now)
        assert dialog is not None
        ack_data = request(
            "ACK", to_tag=dialog.local_tag, call_id=f"c{n}", branch=f"z9hG4bKa{n}", cseq=1
        )
        h.send(ack_data, now)
        assert [type(e) for e in h.events()] == [Confirmed]
        h.send(request("OPTIONS", branch=f"z9hG4bKo{n}", call_id=f"o{n}"), now)
        bye = h.request(
            request("BYE", to_tag=dialog.local_tag, call_id=f"c{n}", branch=f"z9hG4bKb{n}"), now
        )
        h.core.respond(bye.transaction, 200, now=now)
        h.core.take_outgoing()
        h.core.take_events()
        h.core.tick(now)

    h.run_until(1000.0)

    assert (h.core.transactions, h.core.dialogs) == (0, 0)
    assert h.core.next_deadline() is None
    assert len(h.core._timers) == 0


def test_another_sip_version_gets_505() -> None:
    h = Harness()

    [answer] = h.send(request("OPTIONS").replace(b" SIP/2.0\r\n", b" SIP/3.0\r\n", 1), 0.0)

    assert answer.status == 505
    assert h.core.transactions == 0


def test_the_number_of_dialogs_is_capped_and_a_second_answer_is_dropped() -> None:
    h = Harness(max_dialogs=1)
    h.answered_call(0.0)
    tx = h.request(invite(branch="z9hG4bKsecond", call_id="second"), 0.1).transaction

    assert h.core.respond(tx, 200, now=0.1) is None

    [busy] = h.answers()
    assert (busy.status, busy.headers.get("retry-after")) == (503, "5")
    assert h.core.respond(tx, 200, now=0.2) is None
    assert h.answers() == []
    assert h.core.dialogs == 1


def test_the_same_invite_by_another_path_is_refused_482() -> None:
    h = Harness()
    h.request(invite(), 0.0)

    [merged] = h.send(invite(branch="z9hG4bKotherpath"), 0.1)

    assert merged.status == 482
    assert h.events() == []
    h.run_until(1000.0)
    assert statuses(h.send(invite(branch="z9hG4bKlater"), 1000.0)) == [100]  # forgotten


def _bye_answer(bye: SipRequest, status: int = 200) -> bytes:
    answer = SipResponse(status, "OK", Headers(), b"")
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        answer.headers.add(name, bye.headers.get(name) or "")
    answer.headers.add("Content-Length", "0")
    return serialize(answer)


def test_hang_up_sends_a_bye_in_the_dialog_repeated_until_answered() -> None:
    h = Harness()
    dialog, _ = h.answered_call(0.0)
    h.send(ack("tag1"), 0.1)
    h.events()

    h.core.hang_up(dialog, now=10.0, headers=[("Reason", format_reason(200, "media_timeout"))])

    [(destination, data)] = h.core.take_outgoing()
    assert destination == Peer("udp", "127.0.0.1", 5060)  # the INVITE's Contact
    bye = parse(data)
    assert isinstance(bye, SipRequest)
    assert (bye.method, bye.uri) == ("BYE", "sip:src@127.0.0.1:5060;transport=udp")
    assert bye.headers.get("from") == "<sip:acme@127.0.0.1:5080>;tag=tag1"
    assert bye.headers.get("to") == '"Recording Client" <sip:src@127.0.0.1>;tag=1928301774'
    assert bye.headers.get("call-id") == dialog.call_id
    assert bye.headers.get("cseq") == "1 BYE"
    assert bye.headers.get("reason") == 'SIP;cause=200;text="media_timeout"'
    via = parse_via(bye.headers.get("via") or "")
    assert (via.transport, via.host, via.port) == ("UDP", "127.0.0.1", 5080)
    assert dialog.ended and h.core.dialogs == 0

    resent = [(t, data) for t, data in _raw_until(h, 12.0)]
    assert [t for t, _ in resent] == [10.5, 11.5]
    h.core.receive(_bye_answer(bye), UDP, 12.0)
    assert _raw_until(h, 100.0) == []
    assert h.core.next_deadline() is None
    assert h.events() == []
    assert statuses(
        h.send(request("INFO", to_tag="tag1", branch="z9hG4bKlate", cseq=5), 101.0)
    ) == [481]


def test_an_unanswered_bye_is_given_up_and_a_tcp_bye_is_sent_once_on_the_connection() -> None:
    h = Harness()
    dialog, _ = h.answered_call(0.0)
    h.send(ack("tag1"), 0.1)
    h.events()
    h.core.hang_up(dialog, now=1.0)
    h.core.take_outgoing()
    assert len(_raw_until(h, 100.0)) == 10
    assert h.core.next_deadline() is None

    tcp_dialog, _ = h.answered_call(200.0, TCP)
    h.send(request("ACK", to_tag="tag2", branch="z9hG4bKack2", cseq=1, transport="TCP"), 200.1, TCP)
    h.core.hang_up(tcp_dialog, now=201.0)
    h.core.hang_up(tcp_dialog, now=201.0)  # already over: nothing more
    [(destination, data)] = h.core.take_outgoing()
    assert destination == TCP
    assert "SIP/2.0/TCP" in (parse(data).headers.get("via") or "")
    assert _raw_until(h, 300.0) == []


def test_a_bye_follows_the_record_route() -> None:
    h = Harness()
    recorded = invite().replace(
        b"Max-Forwards: 70\r\n",
        b"Max-Forwards: 70\r\nRecord-Route: <sip:10.0.0.1:5070;lr>, <sip:proxy.example;lr>\r\n",
    )
    tx = h.request(recorded, 0.0).transaction
    dialog = h.core.respond(tx, 200, now=0.0)
    assert dialog is not None
    h.answers()
    h.send(ack("tag1"), 0.1)

    h.core.hang_up(dialog, now=1.0)

    [(destination, data)] = h.core.take_outgoing()
    assert destination == Peer("udp", "10.0.0.1", 5070)
    assert parse(data).headers.get_all("route") == [
        "<sip:10.0.0.1:5070;lr>",
        "<sip:proxy.example;lr>",
    ]


def _sent_requests(h: Harness) -> list[SipRequest]:
    sent = [parse(data) for _, data in h.core.take_outgoing()]
    assert all(isinstance(m, SipRequest) for m in sent), sent
    return [m for m in sent if isinstance(m, SipRequest)]


def test_a_hang_up_before_the_ack_waits_for_it() -> None:
    h = Harness()
    dialog, _ = h.answered_call(0.0)

    h.core.hang_up(dialog, now=0.2, headers=[("Reason", format_reason(200, "caller_declined"))])

    assert h.core.take_outgoing() == []  # §15: no BYE before the ACK of our 2xx
    assert h.core.dialogs == 1
    h.core.receive(ack("tag1"), UDP, 0.3)
    [bye] = _sent_requests(h)  # the ACK is not answered; the BYE goes
    assert bye.method == "BYE"
    assert bye.headers.get("reason") == 'SIP;cause=200;text="caller_declined"'
    assert h.events() == []  # no Confirmed: the application ended the dialog already
    assert dialog.ended and h.core.dialogs == 0


def test_a_hang_up_whose_2xx_gets_no_ack_sends_the_bye_when_the_2xx_is_given_up() -> None:
    h = Harness()
    dialog, _ = h.answered_call(0.0)
    h.core.hang_up(dialog, now=0.2)

    sent = _raw_until(h, 32.0)

    methods = [(t, data.split(b" ", 1)[0]) for t, data in sent]
    assert methods[-1] == (32.0, b"BYE")  # §13.3.1.4: ended with a BYE all the same
    assert all(first == b"SIP/2.0" for _, first in methods[:-1])
    assert h.events() == []  # no DialogEnded: the application ended it


def test_a_bye_that_crosses_ours_is_answered_200_by_the_core() -> None:
    h = Harness()
    dialog, _ = h.answered_call(0.0)
    h.send(ack("tag1"), 0.1)
    h.events()
    h.core.hang_up(dialog, now=5.0)
    h.core.take_outgoing()

    theirs = request("BYE", to_tag="tag1", branch="z9hG4bKtheirs", cseq=2)
    assert statuses(h.send(theirs, 5.1)) == [200]
    assert statuses(h.send(theirs, 5.6)) == [200]  # its retransmission: the same answer
    assert h.events() == []
    late = request("BYE", to_tag="tag1", branch="z9hG4bKlater", cseq=3)
    assert statuses(h.send(late, 5.0 + 64 * 0.5 + 1)) == [481]  # long over: unknown


def _raw_until(h: Harness, end: float) -> list[tuple[float, bytes]]:
    sent = []
    while (deadline := h.core.next_deadline()) is not None and deadline <= end:
        h.core.tick(deadline)
        sent += [(deadline, data) for _, data in h.core.take_outgoing()]
    return sent
