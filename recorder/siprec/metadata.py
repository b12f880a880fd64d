"""Recording metadata (RFC 7865) and the older forms recording clients still send.

Read: the RFC namespace ``urn:ietf:params:xml:ns:recording:1``; the draft's namespace
without ``:1``; BroadWorks' older ``urn:ietf:params:xml:ns:siprec`` schema (``id``/``session``
attributes, ``<dataMode>``, ``<ExtensionData>``); any prefix, or no namespace at all;
participants named by ``<nameID aor=…>`` or by ``<aor>`` children; ``<send>``/``<recv>``
inside ``<participant>`` (drafts) or ``<participantstreamassoc>`` (RFC); a stream's label as
a ``<label>`` child or a ``label`` attribute. Element names compare case-insensitively.
Elements in any other namespace (vendor extensions) and everything inside
``<extensiondata>`` are skipped. A partial document (``<datamode>partial``, a metadata-only
``UPDATE`` after a join, a leave or a transfer) parses like a full one.

The XML is read with expat directly: a DTD (and so any entity: billion laughs, external
entities) is refused, sizes are capped, and anything expat cannot parse (an unescaped
``&``) raises :class:`MetadataError` — the server then records from the SDP alone.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NoReturn
from xml.parsers import expat

from recorder.siprec.sdp import MediaStream, SessionDescription

__all__ = [
    "Metadata",
    "MetadataError",
    "Participant",
    "channel_order",
    "merge_metadata",
    "parse_metadata",
    "stream_senders",
]

# Bounds: metadata for a two-party call is 1-3 KiB, a conference's some tens of KiB.
MAX_METADATA_BYTES = 131_072
MAX_ELEMENTS = 4_000
MAX_DEPTH = 32

NAMESPACES = frozenset(
    {
        "urn:ietf:params:xml:ns:recording:1",  # RFC 7865 §9
        "urn:ietf:params:xml:ns:recording",  # the drafts, still sent
        "urn:ietf:params:xml:ns:siprec",  # BroadWorks' older schema
        "",  # no namespace at all
    }
)
_SEPARATOR = " "


class MetadataError(ValueError):
    """Metadata that cannot be read: not XML, a DTD, too large, not recording metadata."""


@dataclass
class Participant:
    """A party of the recorded call: its id in the metadata, its AORs, its display name."""

    id: str
    aors: list[str]
    name: str | None


@dataclass
class Metadata:
    """What callrec uses of the metadata; ``sends`` maps a participant to its streams' ids."""

    session_id: str | None
    participants: list[Participant]
    stream_labels: dict[str, str]
    sends: dict[str, list[str]]
    recvs: dict[str, list[str]] = field(default_factory=dict)
    partial: bool = False  # <datamode>partial</datamode>: an update to earlier metadata
    departed: list[str] = field(default_factory=list)  # participants disassociated


def parse_metadata(xml: bytes) -> Metadata:
    """Read recording metadata; :class:`MetadataError` if it cannot be read."""
    root = _parse_tree(xml)
    root_ns, root_name = _split(root.tag)
    ours = NAMESPACES | {root_ns}
    reader = _Reader(ours)
    reader.walk(root, depth=0)
    if root_name != "recording" and not (reader.participants or reader.stream_labels):
        raise MetadataError(f"not recording metadata: <{root_name}>")
    return Metadata(
        session_id=reader.session_id,
        participants=list(reader.participants.values()),
        stream_labels=reader.stream_labels,
        sends=reader.sends,
        recvs=reader.recvs,
        partial=reader.partial,
        departed=reader.departed,
    )


def merge_metadata(earlier: Metadata, update: Metadata) -> Metadata:
    """The call's metadata after an update (a join, a leave, a transfer: RFC 7865 §6).

    Departed participants go, with their streams; participants the update names replace
    or join (at the end, so that the parties already placed keep their order); a stream the
    update gives to someone is no longer anyone else's. Channels do not move with it: the
    server fixed them with the call's first ``channel_order``.
    """
    gone = set(update.departed)
    participants = {
        p.id: Participant(p.id, list(p.aors), p.name)
        for p in earlier.participants
        if p.id not in gone
    }
    for p in update.participants:
        if p.id in gone:
            continue
        known = participants.setdefault(p.id, Participant(p.id, [], p.name))
        known.aors.extend(a for a in p.aors if a not in known.aors)
        known.name = p.name or known.name
    return Metadata(
        session_id=update.session_id or earlier.session_id,
        participants=list(participants.values()),
        stream_labels={**earlier.stream_labels, **update.stream_labels},
        sends=_merge_streams(earlier.sends, update.sends, gone),
        recvs=_merge_streams(earlier.recvs, update.recvs, gone),
        partial=False,
        departed=list(dict.fromkeys([*earlier.departed, *update.departed])),
    )


def _merge_streams(
    earlier: dict[str, list[str]], update: dict[str, list[str]], gone: set[str]
) -> dict[str, list[str]]:
    taken = {stream for streams in update.values() for stream in streams}
    merged = {
        pid: [s for s in streams if s not in taken]
        for pid, streams in earlier.items()
        if pid not in gone
    }
    merged.update((pid, list(streams)) for pid, streams in update.items() if pid not in gone)
    return {pid: streams for pid, streams in merged.items() if streams}


def _refuse(*_: object) -> NoReturn:
    raise MetadataError("metadata with a DTD or an entity declaration is refused")


def _parse_tree(xml: bytes) -> ET.Element:
    if len(xml) > MAX_METADATA_BYTES:
        raise MetadataError(f"metadata larger than {MAX_METADATA_BYTES} bytes")
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator=_SEPARATOR)
    depth = elements = 0

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal depth, elements
        depth += 1
        elements += 1
        if depth > MAX_DEPTH or elements > MAX_ELEMENTS:
            raise MetadataError("metadata nested too deep or with too many elements")
        builder.start(_clark(name), {_clark(k): v for k, v in attributes.items()})

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1
        builder.end(_clark(name))

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    # No DTD, so no entity can be declared: internal ones (billion laughs) or external ones.
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    try:
        parser.Parse(xml, True)
        return builder.close()
    except MetadataError:
        raise
    except (expat.ExpatError, LookupError, ValueError) as exc:
        # ExpatError: not well-formed; LookupError/ValueError: an encoding expat cannot use
        # (unknown, multi-byte) or bytes that are not in the declared one.
        raise MetadataError(f"metadata is not well-formed XML: {exc}") from exc


def _clark(name: str) -> str:
    # expat gives "uri local"; ElementTree's own form is "{uri}local".
    uri, sep, local = name.rpartition(_SEPARATOR)
    return f"{{{uri}}}{local}" if sep else local


def _split(tag: str) -> tuple[str, str]:
    """(namespace, local name in lower case) of an ElementTree tag."""
    if tag.startswith("{"):
        uri, _, local = tag[1:].partition("}")
        return uri, local.lower()
    return "", tag.lower()


def _attribute(element: ET.Element, *names: str) -> str | None:
    # Attribute names vary by draft and vendor (participant_id, participantID, id).
    wanted = {name.lower() for name in names}
    for key, value in element.attrib.items():
        if _split(key)[1] in wanted and value.strip():
            return value.strip()
    return None


def _text(element: ET.Element) -> str | None:
    text = "".join(element.itertext()).strip()
    return text or None


def _append(mapping: dict[str, list[str]], key: str, values: list[str]) -> None:
    found = mapping.setdefault(key, [])
    found.extend(v for v in values if v not in found)


class _Reader:
    """One pass over the document's elements in the recording namespaces."""

    def __init__(self, ours: frozenset[str] | set[str]) -> None:
        self.ours = ours
        self.session_id: str | None = None
        self.participants: dict[str, Participant] = {}
        self.stream_labels: dict[str, str] = {}
        self.sends: dict[str, list[str]] = {}
        self.recvs: dict[str, list[str]] = {}
        self.partial = False
        self.departed: list[str] = []

    def children(self, element: ET.Element) -> Iterator[tuple[str, ET.Element]]:
        for child in element:
            namespace, local = _split(child.tag)
            if namespace in self.ours and local != "extensiondata":
                yield local, child

    def walk(self, element: ET.Element, depth: int) -> None:
        for local, child in self.children(element):
            if local == "participant":
                self.participant(child)
            elif local == "stream":
                self.stream(child)
            elif local == "participantstreamassoc":
                self.stream_assoc(child)
            elif local == "participantsessionassoc":
                self.session_assoc(child)
            elif local == "sipsessionid":
                # RFC 7989 §4: "<uuid>;remote=<uuid>"; the parameter names the other end
                # and swaps with the direction, the UUID is the session's. Call ids are
                # 1-200 of letters, digits and ._:@+- (consent.calls), so no ';' in ours.
                value = (_text(child) or "").split(";")[0].strip()
                if self.session_id is None and value:
                    self.session_id = value
            elif local == "datamode":
                self.partial = (_text(child) or "").lower() == "partial"
            elif depth < MAX_DEPTH:
                self.walk(child, depth + 1)  # <session>, <group>, wrappers of any name

    def participant(self, element: ET.Element) -> None:
        pid = _attribute(element, "participant_id", "participantid", "id")
        if pid is None:
            pid = f"participant-{len(self.participants) + 1}"
        aors: list[str] = []
        name: str | None = None
        sends: list[str] = []
        recvs: list[str] = []
        for local, child in self.children(element):
            if local == "nameid":
                aor = _attribute(child, "aor")
                aors.extend([aor] if aor else [])
                for inner_local, inner in self.children(child):
                    if inner_local == "aor" and (text := _text(inner)):
                        aors.append(text)
                    elif inner_local == "name" and name is None:
                        name = _text(inner)
            elif local == "aor" and (text := _text(child)):
                aors.append(text)
            elif local == "name" and name is None:
                name = _text(child)
            elif local == "send":
                sends.extend((_text(child) or "").split())
            elif local == "recv":
                recvs.extend((_text(child) or "").split())
        existing = self.participants.get(pid)
        if existing is None:
            existing = self.participants[pid] = Participant(id=pid, aors=[], name=name)
        existing.aors.extend(a for a in aors if a not in existing.aors)
        existing.name = existing.name or name
        if sends:
            _append(self.sends, pid, sends)
        if recvs:
            _append(self.recvs, pid, recvs)

    def stream(self, element: ET.Element) -> None:
        label = _attribute(element, "label")
        for local, child in self.children(element):
            if local == "label" and (text := _text(child)):
                label = text
                break
        sid = _attribute(element, "stream_id", "streamid", "id") or label
        if sid is not None and label is not None:
            self.stream_labels[sid] = label

    def stream_assoc(self, element: ET.Element) -> None:
        pid = _attribute(element, "participant_id", "participantid", "id")
        if pid is None:
            return
        for local, child in self.children(element):
            if local in ("send", "recv"):
                target = self.sends if local == "send" else self.recvs
                _append(target, pid, (_text(child) or "").split())

    def session_assoc(self, element: ET.Element) -> None:
        pid = _attribute(element, "participant_id", "participantid", "id")
        left = any(local == "disassociate-time" for local, _ in self.children(element))
        if pid is not None and left and pid not in self.departed:
            self.departed.append(pid)


def _audio(offer: SessionDescription) -> list[MediaStream]:
    return [s for s in offer.streams if s.media == "audio" and s.port != 0]


def stream_senders(offer: SessionDescription, metadata: Metadata | None) -> dict[int, Participant]:
    """The participant who sends each audio stream, where the metadata says (by label)."""
    if metadata is None:
        return {}
    by_label = {s.label.strip().casefold(): s for s in _audio(offer) if s.label is not None}
    senders: dict[int, Participant] = {}
    for participant in metadata.participants:
        for stream_id in metadata.sends.get(participant.id, []):
            # The label of the metadata's stream; a client that names its streams by their
            # a=label directly, with no <stream> element, is read the same way.
            label = metadata.stream_labels.get(stream_id, stream_id)
            stream = by_label.get(label.strip().casefold())
            if stream is not None and stream.index not in senders:
                senders[stream.index] = participant
    return senders


def channel_order(offer: SessionDescription, metadata: Metadata | None) -> list[int]:
    """Audio stream indexes in channel order.

    By participant order (as the metadata lists them) through ``send`` → stream → label →
    ``a=label``; the streams the metadata does not place follow in ``m=`` order. Without
    metadata, ``m=`` order. Rejected streams (port 0) have no channel.
    """
    placed = list(stream_senders(offer, metadata))  # built in participant order
    return placed + [s.index for s in _audio(offer) if s.index not in placed]
