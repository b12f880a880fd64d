"""Opt-in: the test process's memory after each test module, to find what a suite keeps.

With ``CALLREC_TEST_RSS_LOG=<file>``, one line per module is appended to the file once
its last test is torn down: the module, the resident set size in MiB and the number of
objects the collector tracks, both after a full collection (so what is left is what
something still holds). Run one directory at a time and compare the lines.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Generator

import psutil
import pytest

_PATH = os.environ.get("CALLREC_TEST_RSS_LOG")


def _write(label: str) -> None:
    assert _PATH is not None
    gc.collect()
    rss_mib = psutil.Process().memory_info().rss / 2**20
    with open(_PATH, "a", encoding="utf-8") as out:
        out.write(f"{label}\t{rss_mib:.0f}\t{len(gc.get_objects())}\n")


def pytest_sessionstart(session: pytest.Session) -> None:
    if _PATH:
        _write("(start)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    try:
        return (yield)
    finally:
        if _PATH and (nextitem is None or nextitem.path != item.path):
            _write(item.nodeid.split("::")[0])
