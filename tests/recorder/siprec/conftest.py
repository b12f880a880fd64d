"""The SIPREC tests' sockets are closed after each test, whatever it asserted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.recorder.siprec.src import RtpSender


@pytest.fixture(autouse=True)
def _close_rtp_senders() -> Iterator[None]:
    yield
    while RtpSender.opened:
        RtpSender.opened.pop().close()
