"""SIP messages as recording sources send them, for the parser's and the core's tests."""

from __future__ import annotations

SDP = (
    b"v=0\r\n"
    b"o=SBC 1234 5678 IN IP4 127.0.0.1\r\n"
    b"s=SIP Call\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 30000 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=label:1\r\n"
    b"a=sendonly\r\n"
    b"m=audio 30002 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=label:2\r\n"
    b"a=sendonly\r\n"
)

METADATA = (
    b'<?xml version="1.0" encoding="UTF-8"?>\r\n'
    b'<recording xmlns="urn:ietf:params:xml:ns:recording:1">\r\n'
    b"  <datamode>complete</datamode>\r\n"
    b'  <session session_id="urn:uuid:0f2b0a1c">\r\n'
    b"    <sipSessionID>ab30317f1a784dc48ff824d0d3715d86</sipSessionID>\r\n"
    b"  </session>\r\n"
    b"</recording>\r\n"
)

MULTIPART_BODY = (
    b"--uniqueBoundary\r\n"
    b"Content-Type: application/sdp\r\n"
    b"\r\n" + SDP + b"\r\n"
    b"--uniqueBoundary\r\n"
    b"Content-Type: application/rs-metadata+xml\r\n"
    b"Content-Disposition: recording-session\r\n"
    b"\r\n" + METADATA + b"\r\n"
    b"--uniqueBoundary--\r\n"
)


def invite(
    *,
    call_id: str = "a84b4c76e66710@src.example.com",
    branch: str = "z9hG4bK776asdhds",
    from_tag: str = "1928301774",
    cseq: int = 1,
    transport: str = "UDP",
    port: int = 5060,
    body: bytes = MULTIPART_BODY,
) -> bytes:
    """A SIPREC INVITE from a recording client, with SDP and metadata in a multipart body."""
    head = (
        f"INVITE sip:acme@127.0.0.1:5080;transport={transport.lower()} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f'From: "Recording Client" <sip:src@127.0.0.1>;tag={from_tag}\r\n'
        "To: <sip:acme@127.0.0.1:5080>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} INVITE\r\n"
        f"Contact: <sip:src@127.0.0.1:{port};transport={transport.lower()}>;+sip.src\r\n"
        "Require: siprec\r\n"
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO\r\n"
        'Content-Type: multipart/mixed;boundary="uniqueBoundary"\r\n'
        "Mime-Version: 1.0\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def request(
    method: str,
    *,
    call_id: str = "a84b4c76e66710@src.example.com",
    branch: str = "z9hG4bK0001",
    from_tag: str = "1928301774",
    to_tag: str | None = None,
    cseq: int = 2,
    cseq_method: str | None = None,
    transport: str = "UDP",
    port: int = 5060,
    uri: str = "sip:acme@127.0.0.1:5080",
    body: bytes = b"",
    extra: str = "",
) -> bytes:
    """Any other request of the dialog (``to_tag`` given) or outside one."""
    to = "<sip:acme@127.0.0.1:5080>" + (f";tag={to_tag}" if to_tag else "")
    head = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:src@127.0.0.1>;tag={from_tag}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


OK_RESPONSE = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK776asdhds;received=127.0.0.1;rport=5060\r\n"
    b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKnashds8\r\n"
    b'From: "Recording Client" <sip:src@127.0.0.1>;tag=1928301774\r\n'
    b"To: <sip:acme@127.0.0.1:5080>;tag=a6c85cf\r\n"
    b"Call-ID: a84b4c76e66710@src.example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:callrec@127.0.0.1:5080>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)
