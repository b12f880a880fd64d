"""The baseline of ``bench.siprec_calls``: a bare asyncio UDP sink, in a process of its own.

It binds ``N`` UDP sockets on 127.0.0.1 and, on the asyncio loop, reads and counts
every datagram and does nothing else: the cost of receiving the packets before anything
is done with them. Each socket is read the way the gateway's RTP receivers read theirs
(``loop.add_reader``, draining what is queued into a small buffer), not through
``create_datagram_endpoint``: asyncio's datagram transport reads one datagram per
wake-up into a fresh 256 KiB buffer, which on this machine costs more than the
gateway's whole receive path and, falling behind, loses packets: no floor to compare
against.

Run as ``python -m bench.udp_sink N``: it prints its ports as one JSON line, and on
SIGTERM, once no datagram has come for ``QUIET_S`` (a sink that fell behind still has
some queued), the count of datagrams it received, then exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys

HOST = "127.0.0.1"
QUIET_S = 1.0
BURST = 16  # datagrams read per wake-up of a socket, as the gateway's receivers do


class Sink:
    def __init__(self) -> None:
        self.received = 0

    def readable(self, sock: socket.socket) -> None:
        for _ in range(BURST):
            try:
                sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            self.received += 1


async def main(sockets: int) -> None:
    loop = asyncio.get_running_loop()
    sink, ports, held = Sink(), [], []
    for _ in range(sockets):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), sink.readable, sock)
        held.append(sock)
        ports.append(sock.getsockname()[1])
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps(ports), flush=True)
    await stop.wait()
    while True:
        before = sink.received
        await asyncio.sleep(QUIET_S)
        if sink.received == before:
            break
    print(sink.received, flush=True)
    for sock in held:
        loop.remove_reader(sock.fileno())
        sock.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
