"""Local TCP ports held for a child process: bound here, released just before it binds them.

Holding a port until the last moment keeps any other program from taking it between
our choice and the child's bind.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress

from storage.errors import EmbeddedS3Error

# weed's admin component dials its gRPC port at admin.port + 10000 whatever
# -admin.port.grpc says, so that pair must keep this offset.
GRPC_OFFSET = 10000


@contextmanager
def reserved_ports(
    host: str, flags: Sequence[str], preferred: Mapping[str, int], s3_port: int
) -> Iterator[dict[str, int]]:
    """Hold a free port on ``host`` per flag until exit.

    A preferred port is taken when free, else any; an explicit ``s3_port`` must be free.
    """
    with ExitStack() as stack:
        ports: dict[str, int] = {}
        for flag in flags:
            sock = None
            if flag == "s3.port" and s3_port:
                try:
                    sock = bound_socket(host, s3_port)
                except OSError as exc:
                    raise EmbeddedS3Error(f"S3 port {host}:{s3_port} is not free: {exc}") from exc
            elif preferred.get(flag):
                with suppress(OSError):
                    # Our last run's connections may linger in TIME_WAIT on that port;
                    # weed's own listener would bind through them, so may the probe.
                    sock = bound_socket(host, preferred[flag], reuse=True)
            if sock is None:
                sock = bound_socket(host, 0)
            stack.enter_context(sock)
            ports[flag] = sock.getsockname()[1]
        yield ports


@contextmanager
def exact_ports(host: str, ports: Mapping[str, int]) -> Iterator[None]:
    """Hold exactly these ports on ``host`` until exit; EmbeddedS3Error if one is taken."""
    with ExitStack() as stack:
        for flag, port in ports.items():
            try:
                # Connections of the process that had them may linger in TIME_WAIT.
                stack.enter_context(bound_socket(host, port, reuse=True))
            except OSError as exc:
                raise EmbeddedS3Error(f"{flag} {host}:{port} is not free: {exc}") from exc
        yield


@contextmanager
def reserved_pair(host: str, attempts: int = 50) -> Iterator[int]:
    """Hold a free port ``p`` such that ``p + GRPC_OFFSET`` is free as well; yield ``p``."""
    for _ in range(attempts):
        with bound_socket(host, 0) as first:
            port = first.getsockname()[1]
            if port + GRPC_OFFSET > 65535:
                continue
            try:
                second = bound_socket(host, port + GRPC_OFFSET)
            except OSError:
                continue
            with second:
                yield port
                return
    raise EmbeddedS3Error(f"no free port pair (p, p + {GRPC_OFFSET}) found on {host}")


def bound_socket(host: str, port: int, *, reuse: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
