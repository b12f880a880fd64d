"""The SIPREC recording server (RFC 7866): SIP dialogs turned into live captures.

A recording session from an SRC is one ``LiveCall`` of ``recorder.live``, the same
mechanism WHIP feeds: this module only translates. An initial ``INVITE`` is admitted
(client, source network), its body read (SDP, metadata), the call decided by the
consent ``DecisionService`` and, when it may be recorded, a ``LiveCall`` opened with one
RTP receiver per audio stream; the ``200`` carries the ports. In the dialog, a
re-``INVITE`` or ``UPDATE`` that stops every stream pauses the call through its row
(``consent.calls.change_state``) so that the live loop, which reads the rows, agrees;
``BYE`` ends the call and stores it. A call the loop ends (media timeout, opt-out,
revoked consent, maximum duration) frees its receivers and its entry through
``close_transport``, and its dialog is hung up: a BYE tells the SRC to stop sending.
So are the calls of a gateway that stops, before its sockets close.

Each request is handled in a task of its own, so a slow decision or catalog write
holds up no other call; requests of one dialog take its lock, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from consent import calls, siprec
from consent.calls import CallerConsentRequest
from consent.clients import Client
from consent.decision_service import DecisionService
from consent.decisions import DecisionView
from recorder._exceptions import LiveCaptureError
from recorder.capture.codecs import Codec
from recorder.live import LiveCall, LiveCaptures
from recorder.sip.core import (
    Cancelled,
    Confirmed,
    Dialog,
    DialogEnded,
    RequestReceived,
    ServerTransaction,
)
from recorder.sip.message import SipRequest, format_reason, uri_user
from recorder.sip.transport import SipServer
from recorder.siprec.body import SiprecBodyError, split_body
from recorder.siprec.facts import (
    CallerConsent,
    call_id_of,
    caller_consent,
    choose_formats,
    parties_of,
)
from recorder.siprec.metadata import Metadata, MetadataError, channel_order, parse_metadata
from recorder.siprec.rtp import PortPool, RtpReceiver
from recorder.siprec.sdp import (
    SdpError,
    SessionDescription,
    UnacceptableMedia,
    answer_sdp,
    parse_sdp,
)
from storage.audit import AuditLog
from storage.db import session_scope
from storage.errors import CallrecError

__all__ = ["Refused", "SiprecCall", "SiprecServer"]

log = logging.getLogger(__name__)

CHANNEL = "siprec"
CONSENT_HEADER = "X-Callrec-Caller-Consent"
MAX_CHANNELS = 8  # a conference recorded with more streams is refused (488)


class Refused(Exception):
    """The answer to a request that starts nothing: a status, and a reason to give."""

    def __init__(self, status: int, text: str, *, detail: str | None = None) -> None:
        super().__init__(detail or text)
        self.status, self.text = status, text


@dataclass
class SiprecCall:
    """One recording session: its dialog, its live call and its streams' receivers."""

    client_id: str
    call_id: str
    source: str  # the SRC's address: the actor of what its requests change
    offer: SessionDescription
    codec: Codec[Any]
    order: list[int]  # the offer's stream indexes, in channel order
    formats: dict[int, Any]  # stream index -> the PayloadFormat it sends
    session_id: int = field(default_factory=lambda: secrets.randbelow(2**62))
    version: int = 0
    receivers: dict[int, RtpReceiver] = field(default_factory=dict)
    live: LiveCall | None = None
    dialog: Dialog | None = None
    paused: bool = False  # paused by the SRC's media directions (not by HTTP)
    closed: bool = False
    ending: str | None = None  # why callrec ends it, when that is not the capture's cause
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def actor(self) -> str:
        return f"siprec:{self.source}"


def _before_capture(ssrc: int, sequence: int, timestamp: int, payload: bytes) -> None:
    """A stream's packets before its call's capture session exists: nowhere to go."""


def _key(dialog: Dialog) -> tuple[str, str]:
    return (dialog.call_id, dialog.local_tag)


class SiprecServer:
    """SIPREC over SIP (UDP and TCP on one port) and RTP, onto this replica's live calls."""

    def __init__(
        self,
        *,
        live: LiveCaptures,
        decisions: DecisionService,
        engine: Engine,
        audit: AuditLog,
        clock: Callable[[], datetime],
        media_host: str,
        ports: PortPool,
    ) -> None:
        self._live, self._decisions = live, decisions
        self._engine, self._audit, self._clock = engine, audit, clock
        self._media_host, self._ports = media_host, ports
        self._sip = SipServer(on_event=self._on_event)
        self._calls: dict[tuple[str, str], SiprecCall] = {}
        self._pending: dict[int, bool] = {}  # initial INVITEs being answered: cancelled?
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def port(self) -> int:
        return self._sip.port

    @property
    def listening(self) -> bool:
        return self._sip.listening

    @property
    def active(self) -> int:
        return len(self._calls)

    async def start(self, host: str, port: int) -> None:
        await self._sip.start(host, port)
        log.info("SIPREC listening on %s:%d (UDP and TCP)", host, self.port)

    async def stop(self) -> None:
        """Hang up and store the calls held, then stop taking requests.

        The BYEs go first, all of them, while the sockets are still open; each call is
        then stored (``LiveCaptures.stop`` stores whatever is still live after this).
        """
        self._stopping = True  # new INVITEs get 503 from here on
        calls = list(self._calls.values())
        for call in calls:
            call.ending = "shutdown"
            self._hang_up(call)
        for call in calls:
            try:
                await self._end(call)
            except Exception:  # the others are stored all the same
                log.exception("SIPREC call %s: storing it on stop", call.call_id)
        await self._sip.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- events --------------------------------------------------------------------

    def _on_event(self, event: object) -> None:
        if isinstance(event, RequestReceived):
            if event.dialog is None and event.transaction.request.method == "INVITE":
                # Known before its task runs: a CANCEL read in the same batch finds it.
                self._pending[id(event.transaction)] = False
            self._spawn(self._request(event))
        elif isinstance(event, Cancelled):
            if id(event.transaction) in self._pending:
                self._pending[id(event.transaction)] = True
        elif isinstance(event, DialogEnded):
            call = self._calls.get(_key(event.dialog))
            if call is not None:
                log.info("SIPREC call %s: dialog ended (%s)", call.call_id, event.reason)
                self._spawn(self._end(call))
        elif isinstance(event, Confirmed):
            pass  # the ACK for our 200: nothing waits for it

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _request(self, event: RequestReceived) -> None:
        tx, method = event.transaction, event.transaction.request.method
        try:
            if event.dialog is None:
                if method == "INVITE":
                    await self._initial(tx)
                else:
                    self._respond(tx, 481)
                return
            call = self._calls.get(_key(event.dialog))
            if call is None:  # a call that ended as it was answered (a caller declined)
                self._respond(tx, 200 if method == "BYE" else 481)
                self._sip.end_dialog(event.dialog)
                return
            async with call.lock:
                if method == "BYE":
                    self._respond(tx, 200)
                    await self._end(call)
                elif method in ("INVITE", "UPDATE"):
                    await self._update(call, tx)
                else:  # INFO and whatever else the core hands over in a dialog
                    self._respond(tx, 200)
        except asyncio.CancelledError:
            raise
        except Exception:  # one bad request must not stop the server
            log.exception("SIPREC %s from %s", method, tx.peer.host)
            with contextlib.suppress(Exception):  # it may have been answered already
                self._respond(tx, 500)

    def _respond(
        self,
        tx: ServerTransaction,
        status: int,
        *,
        reason_text: str | None = None,
        body: str | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> Dialog | None:
        extra = list(headers)
        if reason_text is not None:
            extra.append(("Reason", f'SIP;cause={status};text="{reason_text}"'))
        if body is None:
            return self._sip.respond(tx, status, headers=extra)
        return self._sip.respond(
            tx, status, headers=extra, body=body.encode(), content_type="application/sdp"
        )

    # -- the initial INVITE -------------------------------------------------------

    async def _initial(self, tx: ServerTransaction) -> None:
        call: SiprecCall | None = None
        try:
            if self._stopping:
                raise Refused(503, "shutting_down", detail="the gateway is stopping")
            call = await self._open(tx)
            if self._pending.get(id(tx)):
                raise Refused(487, "cancelled")
            # An SRC that offers every stream inactive (its call not answered yet) starts
            # paused, so that the media timeout waits for the streams to be activated.
            await self._follow_directions(call, call.offer)
            dialog = self._respond(tx, 200, body=self._answer(call))
            if dialog is None:  # cancelled while the answer was made
                raise Refused(487, "cancelled")
            call.dialog = dialog
            if call.closed:  # ended while it was answered (e.g. consent revoked)
                self._hang_up(call)  # the BYE waits for the ACK (the core sees to it)
            else:
                self._calls[_key(dialog)] = call
        except Refused as refused:
            if call is not None:
                await self._end(call)  # no media yet: nothing is kept
            if refused.status != 487:  # the core answered a CANCEL itself
                log.info("SIPREC INVITE from %s: %d %s", tx.peer.host, refused.status, refused)
                self._respond(tx, refused.status, reason_text=refused.text)
        except BaseException:
            if call is not None:
                await self._end(call)
            raise
        finally:
            self._pending.pop(id(tx), None)

    async def _open(self, tx: ServerTransaction) -> SiprecCall:
        """Admit, read and decide the INVITE; the call open and receiving, or Refused."""
        request, source = tx.request, tx.peer.host
        client_id = uri_user(request.uri)
        settings = await asyncio.to_thread(self._admit, client_id, source)
        assert client_id is not None  # _admit refuses a URI without a user part
        offer, metadata, unreadable = _read_body(request, require_sdp=True)
        assert offer is not None  # required
        order = channel_order(offer, metadata)
        if not order:
            raise Refused(488, "no_audio", detail="the offer has no audio stream to record")
        if len(order) > MAX_CHANNELS:
            raise Refused(488, "too_many_streams", detail=f"{len(order)} audio streams")
        chosen = choose_formats(offer, order)
        if chosen is None:
            raise Refused(488, "no_common_codec", detail="no codec callrec takes on every stream")
        codec, formats = chosen
        call_id = call_id_of(metadata, request.headers.get("Call-ID"))
        if call_id is None:
            raise Refused(400, "invalid_call_id", detail="no usable Session-ID or Call-ID")
        parties = parties_of(metadata, request.headers.get("From"), request.headers.get("To"))
        if self._pending.get(id(tx)):
            raise Refused(487, "cancelled")  # before anything is decided or catalogued
        actor = f"siprec:{source}"
        header = request.headers.get(siprec.JURISDICTION_HEADER)
        decision = await self._decide(client_id, call_id, parties, header, settings, actor)
        if not (decision.record or decision.awaiting_caller_consent):
            raise Refused(403, decision.reason)
        consent = caller_consent(request.headers.get(CONSENT_HEADER))
        if consent is not None and decision.awaiting_caller_consent:
            # Before the capture opens: a caller who declined gets 403 caller_declined.
            await self._caller_consent(client_id, call_id, actor, consent)
        call = SiprecCall(
            client_id=client_id,
            call_id=call_id,
            source=source,
            offer=offer,
            codec=codec,
            order=order,
            formats=formats,
        )
        try:
            allowed = await asyncio.to_thread(
                self._live.decision_for,
                decision.id,
                client_id=client_id,
                channel=CHANNEL,
                actor=actor,
            )
            for index in order:
                receiver = await RtpReceiver.open(self._media_host, self._ports, _before_capture)
                call.receivers[index] = receiver
                self._expect(call, index, offer)
            call.live = await self._live.open(
                allowed,
                codec=codec,
                channels=len(order),
                close_transport=lambda: self._close(call),
                prefix="sip",
            )
            for channel, index in enumerate(order):
                call.receivers[index].on_packet = self._live.inlet(call.live, channel)
        except CallrecError as exc:
            self._close_receivers(call)
            raise _refusal(exc) from exc
        except BaseException:
            self._close_receivers(call)
            raise
        if unreadable:
            log.warning("SIPREC call %s: metadata unreadable; recorded from the SDP", call_id)
            await asyncio.to_thread(self._note_unreadable, call, allowed.id)
        log.info(
            "SIPREC call %s (client %s) from %s: %d stream(s), %s",
            call_id,
            client_id,
            source,
            len(order),
            codec.name,
        )
        return call

    def _note_unreadable(self, call: SiprecCall, decision_id: str) -> None:
        """Audited, so the audit log shows this call's channels and parties were not
        taken from its metadata (they follow the m= lines and From/To)."""
        try:
            with session_scope(self._engine) as session:
                self._audit.append(
                    session,
                    kind="siprec.metadata_unreadable",
                    actor=call.actor,
                    now=self._clock(),
                    client_id=call.client_id,
                    subject=decision_id,
                    data={"call_id": call.call_id},
                )
        except CallrecError:  # the recording goes on: this is a note, not a condition
            log.exception("SIPREC call %s: noting the unreadable metadata", call.call_id)

    def _admit(self, client_id: str | None, source: str) -> siprec.SiprecSettings:
        """The client's SIPREC settings, if the client exists and admits ``source``."""
        with Session(self._engine) as session:
            if client_id is None or session.get(Client, client_id) is None:
                raise Refused(403, "unknown_client")
            settings = siprec.siprec_settings(session, client_id)
        if not siprec.admits(settings, source):
            raise Refused(
                403, "source_not_allowed", detail=f"{source} is not a source of {client_id}"
            )
        return settings

    async def _decide(
        self,
        client_id: str,
        call_id: str,
        parties: tuple[str, str],
        header: str | None,
        settings: siprec.SiprecSettings,
        actor: str,
    ) -> DecisionView:
        try:
            request = calls.siprec_request(
                call_id=call_id,
                direction="inbound",
                from_=parties[0],
                to=parties[1],
                jurisdiction=siprec.call_jurisdiction(header=header, settings=settings),
            )
        except ValueError as exc:  # a party with nothing to name it
            raise Refused(400, "invalid_call", detail=str(exc)) from exc
        return await self._decisions.decide(
            client_id=client_id,
            call=request,
            actor=actor,
            now=self._clock(),
            jurisdictions=siprec.call_jurisdictions(
                header=header, settings=settings, parties=parties
            ),
        )

    # -- in the dialog ------------------------------------------------------------

    async def _update(self, call: SiprecCall, tx: ServerTransaction) -> None:
        """A re-INVITE or UPDATE: new directions, addresses, metadata or caller consent."""
        request = tx.request
        try:
            # No SDP: metadata only (participants joined or left, a transfer).
            offer, _, _ = (
                _read_body(request, require_sdp=False) if request.body else (None, None, False)
            )
        except Refused as refused:
            self._respond(tx, refused.status, reason_text=refused.text)
            return
        if offer is not None:
            missing = [i for i in call.order if i >= len(offer.streams)]
            if missing or any(
                call.formats[i].pt not in {f.pt for f in offer.streams[i].formats}
                for i in call.order
                if offer.streams[i].port != 0
            ):
                self._respond(tx, 488, reason_text="codec_changed")
                return
            call.offer = offer
            for index in call.order:
                self._expect(call, index, offer)
        consent = caller_consent(request.headers.get(CONSENT_HEADER))
        if consent is not None:
            await self._caller_consent(call.client_id, call.call_id, call.actor, consent)
        if offer is not None:
            await self._follow_directions(call, offer)
        if offer is None and request.method == "UPDATE":
            self._respond(tx, 200)
        else:
            # A re-INVITE without an offer gets ours (RFC 3261 14.2): the same ports.
            self._respond(tx, 200, body=self._answer(call))

    async def _follow_directions(self, call: SiprecCall, offer: SessionDescription) -> None:
        """Pause the call when the SRC stops every stream, resume when one starts again."""
        stopped = not any(i < len(offer.streams) and offer.streams[i].sending for i in call.order)
        if stopped == call.paused:
            return
        # Only a pause made here is resumed here: one asked over HTTP (card details)
        # outlasts a hold the SRC takes and releases meanwhile.
        action = "pause" if stopped else "resume"
        call.paused = False
        try:
            await asyncio.to_thread(self._change_state, call, action)
        except CallrecError as exc:  # e.g. paused over HTTP already: the row says so
            log.info("SIPREC call %s: %s not applied (%s)", call.call_id, action, exc)
            return
        self._live.wake()
        call.paused = stopped

    def _change_state(self, call: SiprecCall, action: str) -> None:
        with session_scope(self._engine) as session:
            calls.change_state(
                session,
                client_id=call.client_id,
                call_id=call.call_id,
                action=action,
                actor=call.actor,
                audit=self._audit,
                now=self._clock(),
            )

    async def _caller_consent(
        self, client_id: str, call_id: str, actor: str, consent: CallerConsent
    ) -> None:
        """The caller's answer carried in band; the live loop sees it in the call's row."""
        request = CallerConsentRequest(
            accepted=consent.accepted, method=consent.method, notice_version=consent.notice
        )

        def answer() -> None:
            with session_scope(self._engine) as session:
                calls.answer_caller_consent(
                    session,
                    client_id=client_id,
                    call_id=call_id,
                    request=request,
                    actor=actor,
                    audit=self._audit,
                    now=self._clock(),
                )

        try:
            await asyncio.to_thread(answer)
        except CallrecError as exc:  # not awaiting (answered already, or no notice needed)
            log.info("SIPREC call %s: caller consent not applied (%s)", call_id, exc)
            return
        self._live.wake()

    # -- media and the end ---------------------------------------------------------

    def _expect(self, call: SiprecCall, index: int, offer: SessionDescription) -> None:
        stream = offer.streams[index]
        address = stream.address or offer.address
        if address is None or _unspecified(address):
            return  # on hold (c=0.0.0.0): keep expecting the address we knew
        if not _ip(address):  # a host name: the media comes from where the INVITE did
            address = call.source
        call.receivers[index].expect(source=address, payload_types={call.formats[index].pt})

    def _answer(self, call: SiprecCall) -> str:
        call.version += 1
        return answer_sdp(
            call.offer,
            address=self._media_host,
            ports={i: r.port for i, r in call.receivers.items()},
            formats=dict(call.formats),
            session_id=call.session_id,
            version=call.version,
        )

    async def _end(self, call: SiprecCall) -> None:
        """End the live call (stored, or discarded if nothing came) and free everything."""
        if call.live is not None:
            await self._live.end(call.live)
        await self._close(call)

    async def _close(self, call: SiprecCall) -> None:
        """The live call's ``close_transport``: receivers closed, the entry forgotten,
        and the dialog hung up unless the SRC ended it (its BYE, no ACK)."""
        self._hang_up(call)
        if not call.closed:
            call.closed = True
            self._close_receivers(call)

    def _hang_up(self, call: SiprecCall) -> None:
        """A BYE in the call's dialog, saying why (RFC 3326 ``Reason``), and the call's
        entry forgotten; nothing when the dialog is over already."""
        if call.dialog is None:
            return
        self._calls.pop(_key(call.dialog), None)
        if call.dialog.ended:
            return
        if not self._sip.listening:  # stopped: nobody left to tell
            self._sip.end_dialog(call.dialog)
            return
        cause = call.live.session.cause if call.live is not None else None
        why = call.ending or (cause.value if cause is not None else "ended")
        self._sip.hang_up(call.dialog, headers=[("Reason", format_reason(200, why))])

    @staticmethod
    def _close_receivers(call: SiprecCall) -> None:
        for receiver in call.receivers.values():
            receiver.close()


def _read_body(
    request: SipRequest, *, require_sdp: bool
) -> tuple[SessionDescription | None, Metadata | None, bool]:
    """The offer's SDP (None in a metadata-only update), its metadata (None if absent or
    unreadable) and whether metadata was there but unreadable; or Refused."""
    try:
        body = split_body(
            request.headers.get("Content-Type"), request.body, require_sdp=require_sdp
        )
        offer = None if body.sdp is None else parse_sdp(body.sdp)
    except (SiprecBodyError, SdpError) as exc:
        raise Refused(400, "invalid_body", detail=str(exc)) from exc
    except UnacceptableMedia as exc:
        raise Refused(488, "unacceptable_media", detail=str(exc)) from exc
    if body.metadata is None:
        return offer, None, False
    try:
        return offer, parse_metadata(body.metadata), False
    except MetadataError as exc:
        # The recording still counts: its channels follow the m= lines.
        log.warning("SIPREC metadata unreadable (%s)", exc)
        return offer, None, True


def _ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False  # a host name: taken as given


def _refusal(exc: CallrecError) -> Refused:
    """What a failed start answers: 503 when busy, 403 with the code otherwise."""
    if isinstance(exc, LiveCaptureError):
        return Refused(503, exc.code, detail=str(exc))
    return Refused(403, exc.code, detail=str(exc))
