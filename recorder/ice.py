"""Where ICE listens: aioice's host candidates and its peers, kept to the addresses set.

aioice gathers every address of the machine but 127.0.0.1 and has no setting to choose
them, so ``use_ice_addresses`` replaces its gathering function for the process (every
peer connection in it, callrec's and a test's own, shares aioice). It is set from
``CALLREC_ICE_ADDRESSES``; on a test machine that is ``127.0.0.1`` and media never goes
to any other address. aioice's version is pinned with aiortc's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import aioice.ice

__all__ = ["use_ice_addresses"]


def use_ice_addresses(addresses: Sequence[str]) -> None:
    """Offer ICE host candidates on exactly these addresses (loopback included).

    aioice gathers every address but 127.0.0.1 and has no setting for it, so its
    gathering function is replaced for the process.
    """
    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses
    _keep_loopback_to_itself()


def _keep_loopback_to_itself() -> None:
    """Ignore checks that reach a loopback candidate from an address outside loopback.

    A loopback address is reachable from this host alone, so a peer that reaches it
    from another address is on this host too, sending from one of its own interfaces;
    aioice would learn that address as peer-reflexive and send media there. Refusing
    the pair keeps a loopback session on loopback (the peer's loopback pair remains).
    """
    connection = aioice.ice.Connection
    received = connection.request_received
    if getattr(received, "loopback_only", False):
        return  # already in place: every app in this process shares aioice

    def request_received(
        self: aioice.ice.Connection,
        message: Any,
        addr: tuple[str, int],
        protocol: Any,
    ) -> None:
        if _loopback(protocol.local_candidate.host) and not _loopback(addr[0]):
            return
        received(self, message, addr, protocol)

    request_received.loopback_only = True  # type: ignore[attr-defined]
    connection.request_received = request_received  # type: ignore[method-assign]


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
