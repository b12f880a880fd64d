"""The one request callrec sends: a BYE for a session it ends itself (RFC 3261 §15.1.1).

When the application ends a recording session (media timeout, opt-out, the call's
limit), the recording client should hear of it rather than keep sending media. The BYE
runs in a non-INVITE client transaction (§17.1.2): repeated on UDP from T1 doubling to
T2 until a final answer comes, given up after 64*T1; nothing waits on its outcome.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from recorder.sip.message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    parse_name_addr,
    parse_via,
    serialize,
    split_list,
)
from recorder.sip.state import T1, Dialog, Peer

__all__ = ["ByeSender", "route_set"]

T2 = 4.0


@dataclass(eq=False)
class _ClientTransaction:
    branch: str
    data: bytes
    destination: Peer
    give_up_at: float
    resend_at: float | None
    interval: float = T1
    done: bool = False


@dataclass(order=True)
class _Due:
    when: float
    order: int
    transaction: _ClientTransaction = field(compare=False)


class ByeSender:
    """BYEs out, their answers in; sans-I/O like the core that owns it."""

    def __init__(self, *, local_host: str, local_port: int, new_branch: Callable[[], str]) -> None:
        self.local_host, self.local_port = local_host, local_port
        self._new_branch = new_branch
        self._pending: dict[str, _ClientTransaction] = {}
        self._due: list[_Due] = []
        self._order = itertools.count()
        self._outgoing: list[tuple[Peer, bytes]] = []

    @property
    def pending(self) -> int:
        return len(self._pending)

    def send(
        self, dialog: Dialog, now: float, headers: Sequence[tuple[str, str]] = ()
    ) -> SipRequest:
        """Send a BYE in ``dialog`` (§12.2.1.1) and keep repeating it until answered."""
        dialog.local_cseq += 1
        branch = "z9hG4bK" + self._new_branch()
        transport = "TCP" if dialog.peer.transport == "tcp" else "UDP"
        host = f"[{self.local_host}]" if ":" in self.local_host else self.local_host
        request = SipRequest("BYE", dialog.remote_target, Headers())
        fields = request.headers
        fields.add("Via", f"SIP/2.0/{transport} {host}:{self.local_port};branch={branch};rport")
        fields.add("Max-Forwards", "70")
        for route in dialog.route_set:
            fields.add("Route", route)
        fields.add("From", dialog.local_uri)
        fields.add("To", dialog.remote_uri)
        fields.add("Call-ID", dialog.call_id)
        fields.add("CSeq", f"{dialog.local_cseq} BYE")
        for name, value in headers:
            fields.add(name, value)
        fields.add("Content-Length", "0")
        data = serialize(request)
        destination = _destination(dialog)
        unreliable = destination.transport == "udp"
        transaction = _ClientTransaction(
            branch, data, destination, now + 64 * T1, now + T1 if unreliable else None
        )
        self._pending[branch] = transaction
        self._outgoing.append((destination, data))
        self._schedule(transaction)
        return request

    def receive(self, response: SipResponse) -> None:
        """An answer: a final one ends its BYE's repetition (§17.1.2.2)."""
        try:
            branch = parse_via(response.headers.get("via") or "").branch
        except SipParseError:
            return
        transaction = self._pending.get(branch or "")
        if transaction is not None and response.status >= 200:
            transaction.done = True
            del self._pending[transaction.branch]

    def tick(self, now: float) -> None:
        while self._due and self._due[0].when <= now:
            transaction = heapq.heappop(self._due).transaction
            if transaction.done:
                continue
            if transaction.give_up_at <= now:
                transaction.done = True  # Timer F: the peer is gone, and so is the dialog
                self._pending.pop(transaction.branch, None)
                continue
            if transaction.resend_at is not None and transaction.resend_at <= now:
                self._outgoing.append((transaction.destination, transaction.data))
                transaction.interval = min(transaction.interval * 2, T2)
                transaction.resend_at = now + transaction.interval
            self._schedule(transaction)

    def next_deadline(self) -> float | None:
        while self._due and self._due[0].transaction.done:
            heapq.heappop(self._due)
        return self._due[0].when if self._due else None

    def take_outgoing(self) -> list[tuple[Peer, bytes]]:
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def _schedule(self, transaction: _ClientTransaction) -> None:
        times = [transaction.give_up_at]
        if transaction.resend_at is not None:
            times.append(transaction.resend_at)
        heapq.heappush(self._due, _Due(min(times), next(self._order), transaction))


def route_set(values: list[str]) -> tuple[str, ...]:
    """The Record-Route values of an INVITE, one entry each, in order (§12.1.1)."""
    return tuple(item for value in values for item in split_list(value))


def _destination(dialog: Dialog) -> Peer:
    """Over TCP the dialog's connection; over UDP the first route's or the Contact's address
    when it is an IP address, else where the INVITE came from (no name is resolved here)."""
    if dialog.peer.transport != "udp":
        return dialog.peer
    for uri in (*dialog.route_set[:1], dialog.remote_target):
        try:
            target = parse_name_addr(uri).uri
        except SipParseError:
            continue
        host, port = _host_port(target)
        if host is not None:
            return Peer("udp", host, port or 5060)
        break  # a name: the INVITE's source stands in for it
    return dialog.peer


def _host_port(uri: str) -> tuple[str | None, int | None]:
    _, _, rest = uri.partition(":")
    rest = rest.rsplit("@", 1)[-1].split(";", 1)[0].split("?", 1)[0]
    if rest.startswith("["):
        host, _, port_text = rest[1:].partition("]")
        port_text = port_text.lstrip(":")
    else:
        host, _, port_text = rest.partition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None, None
    port = int(port_text) if port_text.isdigit() and 0 < int(port_text) < 65536 else None
    return host, port
