"""The baseline of ``bench.siprec_calls``: a bare asyncio UDP sink, in a process of its own.

It opens ``N`` UDP sockets on 127.0.0.1 with asyncio's datagram endpoints (the same
loop and transport callbacks as the gateway's RTP receivers use) and only counts the
datagrams: what receiving the packets costs before anything is done with them.

Run as ``python -m bench.udp_sink N``: it prints its ports as one JSON line, and on
SIGTERM, once no datagram has come for ``QUIET_S`` (a sink that fell behind still has
some queued), the count of datagrams it received, then exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

HOST = "127.0.0.1"
QUIET_S = 1.0


class Counter(asyncio.DatagramProtocol):
    received = 0

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        Counter.received += 1


async def main(sockets: int) -> None:
    loop = asyncio.get_running_loop()
    ports = []
    for _ in range(sockets):
        transport, _ = await loop.create_datagram_endpoint(Counter, local_addr=(HOST, 0))
        ports.append(transport.get_extra_info("sockname")[1])
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps(ports), flush=True)
    await stop.wait()
    while True:
        before = Counter.received
        await asyncio.sleep(QUIET_S)
        if Counter.received == before:
            break
    print(Counter.received, flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
