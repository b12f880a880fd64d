"""Live capture: RTP payloads from any transport into a call's container."""

from collections.abc import Callable

# How a transport hands on each RTP packet of a channel: SSRC, sequence number,
# timestamp, payload. Plain arguments: it runs for every packet of every call.
PacketSink = Callable[[int, int, int, bytes], None]
