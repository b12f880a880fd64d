"""What the SIP core keeps and reports: peers, dialogs, server transactions and events.

``recorder.sip.core`` re-exports all of it; the application imports from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recorder.sip.message import SipRequest

__all__ = [
    "Cancelled",
    "Confirmed",
    "Dialog",
    "DialogEnded",
    "Event",
    "Peer",
    "RequestReceived",
    "ServerTransaction",
]

T1 = 0.5  # RFC 3261 §17.1.1.1: round-trip estimate, the first retransmission interval


@dataclass(frozen=True)
class Peer:
    """Where a message came from and where its answers go (``connection`` for TCP)."""

    transport: str  # "udp" | "tcp"
    host: str
    port: int
    connection: int | None = None


@dataclass(eq=False)
class Dialog:
    """A dialog the application accepted (§12): Call-ID and both tags identify it."""

    call_id: str
    local_tag: str
    remote_tag: str
    peer: Peer
    remote_cseq: int = 0
    created: float = 0.0
    ended: bool = False
    # What a request of ours in this dialog needs (§12.1.1): our From (the INVITE's To with
    # our tag), our To (the INVITE's From), the Request-URI (its Contact) and its route set.
    local_uri: str = ""
    remote_uri: str = ""
    remote_target: str = ""
    route_set: tuple[str, ...] = ()
    local_cseq: int = 0
    # A hang-up waiting for the ACK of our 2xx (§15): the BYE's extra headers.
    bye_waiting: tuple[tuple[str, str], ...] | None = None
    transactions: set[ServerTransaction] = field(default_factory=set, repr=False)


@dataclass(eq=False)
class ServerTransaction:
    """One request and its answers (§17.2); opaque to the application but for these two."""

    request: SipRequest
    peer: Peer
    key: tuple[str, ...] = ()
    dialog: Dialog | None = None
    destination: Peer | None = None
    marks: str | None = None  # what the top Via of our answers gains (received, rport)
    local_tag: str | None = None
    last: bytes | None = None  # the last answer sent, re-sent on a retransmitted request
    final: int | None = None  # the final status, once sent
    cseq: int = 0
    identity: tuple[str, str, int] | None = None  # an initial INVITE's Call-ID, From tag, CSeq
    # Timers, each None when not running (seconds on the caller's clock).
    resend_at: float | None = None
    interval: float = T1
    give_up_at: float | None = None
    answer_by: float | None = None
    drop_at: float | None = None
    deadline: float | None = None

    @property
    def method(self) -> str:
        return self.request.method


@dataclass
class RequestReceived:
    """A request for the application (INVITE, UPDATE, INFO, BYE); answer it with respond()."""

    transaction: ServerTransaction
    dialog: Dialog | None  # None: an initial INVITE


@dataclass
class Cancelled:
    """A CANCEL for an INVITE not yet answered: the core sent 200 to it and 487 to the INVITE."""

    transaction: ServerTransaction


@dataclass
class Confirmed:
    """The ACK for our 2xx arrived (the 2xx is no longer repeated)."""

    dialog: Dialog


@dataclass
class DialogEnded:
    """A dialog ended without a request saying so: ``no_ack`` or ``expired``."""

    dialog: Dialog
    reason: str


Event = RequestReceived | Cancelled | Confirmed | DialogEnded
