"""SIP's server side with no I/O: bytes and ``now`` in; bytes to send, events and deadlines out.

The core is a user agent server (RFC 3261 §8.2, §12, §13.3, §17.2) for a recording
server that answers, and sends one request of its own: the BYE of ``hang_up``, when the
application ends a session itself (``hangup.py``). It keeps server transactions
(retransmitted requests get the last answer again; a final answer to an INVITE is
repeated on UDP until the ACK) and dialogs (in-dialog requests reach the application
with their dialog, others get 481).
It answers ``OPTIONS``, ``CANCEL``, ``ACK`` and what it cannot handle by itself; the
application answers ``INVITE``, ``UPDATE``, ``INFO`` and ``BYE`` through ``respond``.

A ``BYE`` reaches the application as a ``RequestReceived`` only: the application ends its
call there. ``DialogEnded`` reports the ends no request tells of: no ACK for our 2xx
(``no_ack``) or a dialog older than its limit (``expired``). A dialog the application
hangs up is its own end: the BYE waits for the ACK of our 2xx if that is still due, and
a BYE of the peer that crosses ours is answered 200 by the core, with no event.

Everything is bounded: transactions linger 64*T1 (32 s) on UDP to absorb retransmissions
and are then dropped, their number is capped (503 beyond), and so is the dialogs'.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from recorder.sip.answers import (
    COPIED,
    REQUEST_START,
    answer_destination,
    build_response,
    contact_user,
    warning,
)
from recorder.sip.hangup import ByeSender, route_set
from recorder.sip.message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    full_name,
    header_params,
    parse,
    parse_cseq,
    parse_name_addr,
    parse_via,
    serialize,
    split_list,
    uri_user,
)
from recorder.sip.state import (
    T1,
    Cancelled,
    Confirmed,
    Dialog,
    DialogEnded,
    Event,
    Peer,
    RequestReceived,
    ServerTransaction,
)

__all__ = [
    "Cancelled",
    "Confirmed",
    "Dialog",
    "DialogEnded",
    "Event",
    "Peer",
    "RequestReceived",
    "ServerTransaction",
    "SipCore",
]

log = logging.getLogger(__name__)

T2 = 4.0  # the longest retransmission interval
T4 = 5.0  # how long a message may stay in the network (Timer I)
LINGER = 64 * T1  # Timers H, J, L: how long a finished transaction still absorbs copies
# How long the application may take to answer before the core answers 500 for it: an
# INVITE's client waits for as long as a proxy's Timer C (§16.6, 3 min); others 64*T1.
ANSWER_INVITE_WITHIN = 180.0
ANSWER_WITHIN = 64 * T1

# Methods the application is handed, the ones the core answers, and those it knows but
# does not offer (405 rather than 501, §21.4.6).
APP_METHODS = frozenset({"INVITE", "UPDATE", "INFO", "BYE"})
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO"
ACCEPT = "application/sdp, application/rs-metadata+xml, multipart/mixed"
KNOWN_ELSEWHERE = frozenset(
    {"REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH"}
)
MAGIC_COOKIE = "z9hG4bK"  # §8.1.1.7: branches made by RFC 3261 clients start with it


@dataclass(order=True)
class _Timer:
    when: float
    order: int
    target: ServerTransaction | Dialog = field(compare=False)


class SipCore:
    """The server side of SIP for one listening address (see the module's docstring)."""

    def __init__(
        self,
        *,
        local_host: str,
        local_port: int,
        # UDP keeps about two finished transactions per call for 32 s each: 32,768 lets
        # 500 calls a second be set up and torn down for as long as they come.
        max_transactions: int = 32_768,
        max_dialogs: int = 10_000,
        dialog_max_age: float = 24 * 3600.0,
        new_tag: Callable[[], str] | None = None,
    ) -> None:
        self.local_host, self.local_port = local_host, local_port
        self.max_transactions, self.max_dialogs = max_transactions, max_dialogs
        self.dialog_max_age = dialog_max_age
        self._new_tag = new_tag or (lambda: secrets.token_hex(8))
        self._transactions: dict[tuple[str, ...], ServerTransaction] = {}
        self._dialogs: dict[tuple[str, str, str], Dialog] = {}
        self._awaiting_ack: dict[tuple[int, int], ServerTransaction] = {}  # (dialog, cseq)
        # Initial INVITEs by Call-ID, From tag and CSeq: one arriving twice is merged (§8.2.2.2).
        self._initial: dict[tuple[str, str, int], ServerTransaction] = {}
        self._timers: list[_Timer] = []
        self._order = itertools.count()
        self._outgoing: list[tuple[Peer, bytes]] = []
        self._events: list[Event] = []
        self._byes = ByeSender(
            local_host=local_host, local_port=local_port, new_branch=lambda: secrets.token_hex(8)
        )
        # Dialogs we hung up, by key, until when a BYE of the peer's that crossed ours still
        # gets 200 (its retransmissions included): in time order, so the oldest go first.
        self._hung_up: dict[tuple[str, str, str], float] = {}

    # -- the interface ---------------------------------------------------------------

    @property
    def transactions(self) -> int:
        return len(self._transactions)

    @property
    def dialogs(self) -> int:
        return len(self._dialogs)

    def receive(self, data: bytes, peer: Peer, now: float) -> None:
        """One datagram or TCP frame from ``peer``; bad input gets 400 or silence."""
        try:
            message = parse(data)
        except SipParseError as exc:
            log.debug("SIP from %s:%d: %s", peer.host, peer.port, exc)
            self._salvage(data, peer, str(exc))
            return
        if isinstance(message, SipResponse):
            self._byes.receive(message)  # the only requests the core sends are BYEs
            return
        self._request(message, peer, now)

    def respond(
        self,
        transaction: ServerTransaction,
        status: int,
        *,
        now: float,
        reason: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Dialog | None:
        """The application's answer; a 2xx to an INVITE returns its dialog.

        An answer to a transaction that already has its final one (a CANCEL got there
        first, or the core timed it out) is dropped and returns None.
        """
        tx = transaction
        if tx.final is not None or self._transactions.get(tx.key) is not tx:
            log.debug("SIP %s answered twice (%d dropped)", tx.method, status)
            return None
        if not 100 <= status < 700:
            raise ValueError(f"SIP status {status} out of range")
        if status == 100:
            return None  # the core sent it already
        extra = list(headers)
        if content_type is not None:
            extra.append(("Content-Type", content_type))
        dialog = tx.dialog
        invite = tx.method == "INVITE"
        if invite and 200 <= status < 300:
            extra.append(("Contact", self._contact(tx)))
            if not any(name.lower() == "allow" for name, _ in extra):
                extra.append(("Allow", ALLOW))  # §20.5: a 2xx to an INVITE should say
            if dialog is None:
                dialog = self._new_dialog(tx, now)
                if dialog is None:
                    status, extra, body = 503, [("Retry-After", "5")], b""
        self._send_answer(tx, status, reason, extra, body, now)
        if invite and 200 <= status < 300:
            return dialog
        return None

    def hang_up(
        self, dialog: Dialog, *, now: float, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """End a dialog from our side: send a BYE (with ``headers``, e.g. a ``Reason``)
        and forget the dialog. Nothing is reported back; a dialog already over is left.

        §15: no BYE before the ACK of our 2xx; until it comes (or the 2xx is given up),
        the BYE waits and the dialog stays.
        """
        if dialog.ended or dialog.bye_waiting is not None:
            return
        if any(tx.method == "INVITE" and self._unacked(tx) for tx in dialog.transactions):
            dialog.bye_waiting = tuple(headers)
            return
        self._send_bye(dialog, now, headers)

    def _send_bye(self, dialog: Dialog, now: float, headers: Sequence[tuple[str, str]]) -> None:
        self._byes.send(dialog, now, headers)
        self._forget(dialog)
        hung_up = self._hung_up
        while hung_up and next(iter(hung_up.values())) <= now:
            del hung_up[next(iter(hung_up))]
        if len(hung_up) < self.max_dialogs:
            hung_up[(dialog.call_id, dialog.local_tag, dialog.remote_tag)] = now + LINGER

    @staticmethod
    def _unacked(tx: ServerTransaction) -> bool:
        """A 2xx of ours to an INVITE, still waiting for its ACK."""
        return tx.final is not None and tx.final < 300 and tx.give_up_at is not None

    def end_dialog(self, dialog: Dialog) -> None:
        """Forget a dialog the application ended itself (media timeout, opt-out)."""
        self._forget(dialog)

    def tick(self, now: float) -> None:
        """Run the timers that are due: retransmissions, timeouts, expiries."""
        self._byes.tick(now)
        while self._timers and self._timers[0].when <= now:
            timer = heapq.heappop(self._timers)
            target = timer.target
            if isinstance(target, Dialog):
                key = (target.call_id, target.local_tag, target.remote_tag)
                if not target.ended and self._dialogs.get(key) is target:
                    self._forget(target)
                    self._events.append(DialogEnded(target, "expired"))
            elif target.deadline == timer.when:
                target.deadline = None  # this entry is spent; _schedule pushes the next
                self._transaction_timer(target, now)

    def next_deadline(self) -> float | None:
        """When ``tick`` has something to do next, or None."""
        ours, byes = self._next_deadline(), self._byes.next_deadline()
        if ours is None or byes is None:
            return byes if ours is None else ours
        return min(ours, byes)

    def _next_deadline(self) -> float | None:
        while self._timers:
            first = self._timers[0]
            target = first.target
            if isinstance(target, Dialog):
                if not target.ended:
                    return first.when
            elif target.deadline == first.when and target.key in self._transactions:
                return first.when
            heapq.heappop(self._timers)
        return None

    def take_outgoing(self) -> list[tuple[Peer, bytes]]:
        outgoing, self._outgoing = self._outgoing, []
        return outgoing + self._byes.take_outgoing()

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    # -- requests --------------------------------------------------------------------

    def _request(self, request: SipRequest, peer: Peer, now: float) -> None:
        headers = request.headers
        try:
            via = parse_via(headers.get("via") or "")
        except SipParseError:
            log.debug("SIP %s from %s without a usable Via: dropped", request.method, peer.host)
            return  # nowhere to answer (§18.2.2 needs the Via)
        try:
            cseq = parse_cseq(headers.get("cseq") or "")
        except SipParseError:
            return  # an answer is matched by its CSeq: without one, none can be made
        try:
            call_id, from_, to = headers.get("call-id"), headers.get("from"), headers.get("to")
            if not call_id or not from_ or not to:
                raise SipParseError("From, To or Call-ID missing")
            if cseq.method != request.method.upper():
                raise SipParseError("the CSeq method is not the request's")
            remote_tag = header_params(from_).get("tag") or ""
            to_tag = header_params(to).get("tag")
        except SipParseError as exc:
            if request.method != "ACK":  # an ACK is never answered (§17.1.1.3)
                self._stateless(
                    request, peer, 400, None, [("Warning", warning(self.local_host, exc))]
                )
            return
        method = request.method.upper()
        if request.version.upper() != "SIP/2.0" and method != "ACK":
            self._stateless(request, peer, 505, None, [])  # §21.5.7
            return
        key = self._key(request, via.branch, via.host, via.port, call_id, remote_tag, cseq.number)
        if method == "ACK":
            self._ack(key, call_id, remote_tag, to_tag, cseq.number, now)
            return
        known = self._transactions.get((*key, method))
        if known is not None:  # a retransmission: the last answer again (§17.2.1, §17.2.2)
            if known.last is not None and known.destination is not None:
                self._outgoing.append((known.destination, known.last))
            return
        if len(self._transactions) >= self.max_transactions:
            self._stateless(request, peer, 503, None, [("Retry-After", "5")])
            return
        tx = ServerTransaction(request, peer, (*key, method), cseq=cseq.number)
        tx.destination, tx.marks = answer_destination(via.host, via.port, via.params, peer)
        self._transactions[tx.key] = tx
        if method == "CANCEL":
            self._cancel(tx, key, now)
        elif to_tag is not None:
            self._in_dialog(tx, method, call_id, to_tag, remote_tag, cseq.number, now)
        elif method == "INVITE":
            self._initial_invite(tx, call_id, remote_tag, now)
        else:
            self._outside_dialog(tx, method, now)

    def _initial_invite(
        self, tx: ServerTransaction, call_id: str, remote_tag: str, now: float
    ) -> None:
        identity = (call_id, remote_tag, tx.cseq)
        if remote_tag and identity in self._initial:
            # The same INVITE by another path (a fork looping back): one session is enough.
            self._send_answer(tx, 482, None, [], b"", now)
            return
        if remote_tag:
            self._initial[identity] = tx
            tx.identity = identity
        self._send_answer(tx, 100, None, [], b"", now)
        self._hand_over(tx, None, now)

    def _in_dialog(
        self,
        tx: ServerTransaction,
        method: str,
        call_id: str,
        to_tag: str,
        remote_tag: str,
        cseq: int,
        now: float,
    ) -> None:
        dialog = self._dialogs.get((call_id, to_tag, remote_tag))
        if dialog is None:
            if method == "BYE" and self._hung_up.get((call_id, to_tag, remote_tag), 0.0) > now:
                # Its BYE crossed ours: both ends agree the dialog is over (RFC 5407, BYE glare).
                self._send_answer(tx, 200, None, [], b"", now)
            elif method == "OPTIONS":
                self._options(tx, now)
            elif method in APP_METHODS:
                self._send_answer(tx, 481, None, [], b"", now)
            else:
                self._outside_dialog(tx, method, now)
            return
        tx.dialog = dialog
        dialog.transactions.add(tx)
        if method not in APP_METHODS:
            self._outside_dialog(tx, method, now)
            return
        if cseq < dialog.remote_cseq and method != "BYE":
            # §12.2.2: a request older than the last one is out of order.
            self._send_answer(tx, 500, "Request Out Of Order", [], b"", now)
            return
        dialog.remote_cseq = max(dialog.remote_cseq, cseq)
        if method == "INVITE":
            if any(
                t.method == "INVITE" and t.final is None and t is not tx
                for t in dialog.transactions
            ):
                # §14.2: a re-INVITE while the last one is still unanswered.
                self._send_answer(tx, 500, None, [("Retry-After", "2")], b"", now)
                return
            self._send_answer(tx, 100, None, [], b"", now)
        if method == "BYE":
            # §15.1.2: the requests still open in the dialog are answered 487.
            for other in list(dialog.transactions):
                if other.final is None and other is not tx:
                    self._send_answer(other, 487, None, [], b"", now)
            self._forget(dialog)
        self._hand_over(tx, dialog, now)

    def _hand_over(self, tx: ServerTransaction, dialog: Dialog | None, now: float) -> None:
        tx.answer_by = now + (ANSWER_INVITE_WITHIN if tx.method == "INVITE" else ANSWER_WITHIN)
        self._schedule(tx)
        self._events.append(RequestReceived(tx, dialog))

    def _outside_dialog(self, tx: ServerTransaction, method: str, now: float) -> None:
        if method == "OPTIONS":
            self._options(tx, now)
        elif method in APP_METHODS:
            self._send_answer(tx, 481, None, [], b"", now)  # BYE, UPDATE, INFO with no dialog
        elif method in KNOWN_ELSEWHERE:
            self._send_answer(tx, 405, None, [("Allow", ALLOW)], b"", now)
        else:
            self._send_answer(tx, 501, None, [("Allow", ALLOW)], b"", now)

    def _options(self, tx: ServerTransaction, now: float) -> None:
        extra = [("Allow", ALLOW), ("Accept", ACCEPT), ("Supported", "siprec")]
        self._send_answer(tx, 200, None, extra, b"", now)

    def _cancel(self, tx: ServerTransaction, key: tuple[str, ...], now: float) -> None:
        """§9.2: 200 to the CANCEL; 487 to its INVITE unless that one is answered already."""
        invite = self._transactions.get((*key, "INVITE"))
        if invite is None:
            self._send_answer(tx, 481, None, [], b"", now)
            return
        self._send_answer(tx, 200, None, [], b"", now)
        if invite.final is None:
            self._send_answer(invite, 487, None, [], b"", now)
            self._events.append(Cancelled(invite))

    def _ack(
        self,
        key: tuple[str, ...],
        call_id: str,
        remote_tag: str,
        to_tag: str | None,
        cseq: int,
        now: float,
    ) -> None:
        """§17.2.1: an ACK ends the repetition of our final answer; it is never answered."""
        tx = self._transactions.get((*key, "INVITE"))
        if tx is None and to_tag is not None:
            dialog = self._dialogs.get((call_id, to_tag, remote_tag))
            if dialog is not None:
                tx = self._awaiting_ack.get((id(dialog), cseq))
        if tx is None or tx.final is None or tx.give_up_at is None:
            return  # a copy of an ACK, or one for nothing we know: absorbed
        tx.resend_at = tx.give_up_at = None
        self._awaiting_ack.pop((id(tx.dialog), tx.cseq), None)
        reliable = tx.peer.transport != "udp"
        tx.drop_at = now + (0.0 if reliable else (LINGER if tx.final < 300 else T4))
        self._schedule(tx)
        dialog = tx.dialog
        if tx.final < 300 and dialog is not None and not dialog.ended:
            if dialog.bye_waiting is not None:
                self._send_bye(dialog, now, dialog.bye_waiting)  # hung up before the ACK
            else:
                self._events.append(Confirmed(dialog))

    # -- answers ---------------------------------------------------------------------

    def _send_answer(
        self,
        tx: ServerTransaction,
        status: int,
        reason: str | None,
        extra: Sequence[tuple[str, str]],
        body: bytes,
        now: float,
    ) -> None:
        if status > 100 and tx.local_tag is None:
            to_tag = header_params(tx.request.headers.get("to") or "").get("tag")
            tx.local_tag = to_tag or (tx.dialog.local_tag if tx.dialog else self._new_tag())
        response = build_response(tx.request, status, reason, tx.local_tag, extra, body, tx.marks)
        data = serialize(response)
        tx.last = data
        assert tx.destination is not None
        self._outgoing.append((tx.destination, data))
        if status < 200:
            return
        tx.final = status
        tx.answer_by = None
        unreliable = tx.peer.transport == "udp"
        if tx.method == "INVITE":
            # §13.3.1.4 and §17.2.1: repeated until the ACK, given up after 64*T1.
            tx.interval = T1
            tx.resend_at = now + T1 if unreliable else None
            tx.give_up_at = now + 64 * T1
            if tx.dialog is not None and status < 300:
                self._awaiting_ack[(id(tx.dialog), tx.cseq)] = tx
        else:
            tx.drop_at = now + (LINGER if unreliable else 0.0)  # Timer J
        self._schedule(tx)

    def _transaction_timer(self, tx: ServerTransaction, now: float) -> None:
        if tx.drop_at is not None and tx.drop_at <= now:
            self._drop(tx)
            return
        if tx.give_up_at is not None and tx.give_up_at <= now:
            self._drop(tx)
            dialog = tx.dialog
            if tx.final is not None and tx.final < 300 and dialog is not None and not dialog.ended:
                log.info("SIP dialog %s: no ACK for our %d", dialog.call_id, tx.final)
                if dialog.bye_waiting is not None:
                    # §13.3.1.4: the session is ended with a BYE all the same.
                    self._send_bye(dialog, now, dialog.bye_waiting)
                else:
                    self._forget(dialog)
                    self._events.append(DialogEnded(dialog, "no_ack"))
            return
        if tx.answer_by is not None and tx.answer_by <= now:
            log.warning("SIP %s from %s unanswered: 500", tx.method, tx.peer.host)
            self._send_answer(tx, 500, None, [], b"", now)
            return
        if tx.resend_at is not None and tx.resend_at <= now:
            if tx.last is not None and tx.destination is not None:
                self._outgoing.append((tx.destination, tx.last))
            tx.interval = min(tx.interval * 2, T2)
            tx.resend_at = now + tx.interval
        self._schedule(tx)

    def _schedule(self, tx: ServerTransaction) -> None:
        timers = (tx.resend_at, tx.give_up_at, tx.answer_by, tx.drop_at)
        times = [t for t in timers if t is not None]
        deadline = min(times) if times else None
        if deadline is not None and deadline != tx.deadline:
            self._push(_Timer(deadline, next(self._order), tx))
        tx.deadline = deadline

    def _push(self, timer: _Timer) -> None:
        """Add a timer; entries gone stale are swept out once they outnumber the live ones."""
        heapq.heappush(self._timers, timer)
        if len(self._timers) > 1024 + 4 * (len(self._transactions) + len(self._dialogs)):
            self._timers = [t for t in self._timers if _live(t)]
            heapq.heapify(self._timers)

    def _drop(self, tx: ServerTransaction) -> None:
        tx.deadline = None
        if self._transactions.get(tx.key) is tx:
            del self._transactions[tx.key]
        if tx.identity is not None and self._initial.get(tx.identity) is tx:
            del self._initial[tx.identity]
        if tx.dialog is not None:
            tx.dialog.transactions.discard(tx)
            if self._awaiting_ack.get((id(tx.dialog), tx.cseq)) is tx:
                del self._awaiting_ack[(id(tx.dialog), tx.cseq)]

    def _stateless(
        self,
        request: SipRequest,
        peer: Peer,
        status: int,
        reason: str | None,
        extra: Sequence[tuple[str, str]],
    ) -> None:
        """An answer with no transaction kept (bad requests, and when at the cap)."""
        try:
            via = parse_via(request.headers.get("via") or "")
        except SipParseError:
            return
        destination, marks = answer_destination(via.host, via.port, via.params, peer)
        tag = None if status == 100 else self._new_tag()
        response = build_response(request, status, reason, tag, extra, b"", marks)
        self._outgoing.append((destination, serialize(response)))

    def _salvage(self, data: bytes, peer: Peer, problem: str) -> None:
        """A 400 for a request the parser refused, when its head names enough to answer."""
        head = data[:8192].split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        lines = head.replace(b"\r\n", b"\n").split(b"\n")
        start = lines[0].decode("latin-1")
        if not REQUEST_START.match(start) or start.upper().startswith("ACK "):
            return
        headers = Headers()
        for line in lines[1:]:
            name, colon, value = line.decode("latin-1").partition(":")
            if colon and full_name(name.strip()) in COPIED:
                value = "".join(c for c in value.strip() if c.isprintable())
                headers.add(name.strip(), value)
        if not all(headers.get(n) for n in ("via", "from", "to", "call-id", "cseq")):
            return
        method, uri, _ = start.split(" ", 2)
        request = SipRequest(method, uri, headers, b"")
        self._stateless(request, peer, 400, None, [("Warning", warning(self.local_host, problem))])

    # -- dialogs ---------------------------------------------------------------------

    def _new_dialog(self, tx: ServerTransaction, now: float) -> Dialog | None:
        if len(self._dialogs) >= self.max_dialogs:
            return None
        headers = tx.request.headers
        remote_tag = header_params(headers.get("from") or "").get("tag") or ""
        local_tag = tx.local_tag or self._new_tag()
        tx.local_tag = local_tag
        to, from_ = headers.get("to") or "", headers.get("from") or ""
        contact = headers.get("contact")
        try:
            target = parse_name_addr(split_list(contact)[0] if contact else from_).uri
        except (SipParseError, IndexError):
            target = tx.request.uri  # nowhere better to send a BYE to than where it came from
        dialog = Dialog(
            headers.get("call-id") or "",
            local_tag,
            remote_tag,
            tx.peer,
            tx.cseq,
            created=now,
            local_uri=to if "tag" in header_params(to) else f"{to};tag={local_tag}",
            remote_uri=from_,
            remote_target=target,
            route_set=route_set(headers.get_all("record-route")),
        )
        self._dialogs[(dialog.call_id, local_tag, remote_tag)] = dialog
        tx.dialog = dialog
        dialog.transactions.add(tx)
        self._push(_Timer(now + self.dialog_max_age, next(self._order), dialog))
        return dialog

    def _forget(self, dialog: Dialog) -> None:
        dialog.ended = True
        key = (dialog.call_id, dialog.local_tag, dialog.remote_tag)
        if self._dialogs.get(key) is dialog:
            del self._dialogs[key]
        for tx in list(dialog.transactions):
            if tx.resend_at is not None:
                tx.resend_at = None  # a 2xx of an ended dialog is repeated no more
                self._schedule(tx)

    # -- details ---------------------------------------------------------------------

    def _key(
        self,
        request: SipRequest,
        branch: str | None,
        host: str,
        port: int | None,
        call_id: str,
        remote_tag: str,
        cseq: int,
    ) -> tuple[str, ...]:
        """§17.2.3: the branch and sent-by identify a transaction (the method is added)."""
        sent_by = f"{host.lower()}:{port or ''}"
        if branch and branch.startswith(MAGIC_COOKIE):
            return (branch, sent_by)
        # An RFC 2543 client: the request's identity stands in for the branch.
        return (f"{call_id}|{remote_tag}|{cseq}|{request.uri}|{branch or ''}", sent_by)

    def _contact(self, tx: ServerTransaction) -> str:
        user = uri_user(tx.request.uri)
        host = f"[{self.local_host}]" if ":" in self.local_host else self.local_host
        at = f"{contact_user(user)}@" if user else ""
        transport = ";transport=tcp" if tx.peer.transport == "tcp" else ""
        return f"<sip:{at}{host}:{self.local_port}{transport}>"


def _live(timer: _Timer) -> bool:
    target = timer.target
    if isinstance(target, Dialog):
        return not target.ended
    return target.deadline == timer.when
