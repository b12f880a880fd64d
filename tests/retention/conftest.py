"""The API fixtures of the gateway's tests serve retention's HTTP tests too."""

from tests.recorder.conftest import backend, client, clock

__all__ = ["backend", "client", "clock"]
