"""Keeps the embedded S3 running: a dead ``weed`` is logged, reported and restarted.

While the child is down, ``problem`` says why (``/readyz`` answers 503 with it) and
uploads wait in the spool (the vault keeps a recording there when S3 is unreachable).
Restarts use the same ports and data dir, after a delay that doubles from
``first_delay`` up to ``max_delay`` while they fail or the child keeps dying soon after;
a child that stayed up for ``max_delay`` earns the short delay again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from storage.embedded_s3 import EmbeddedS3
from storage.errors import EmbeddedS3Error

log = logging.getLogger(__name__)

# How often the thread looks at the child: the longest a death goes unnoticed.
_WATCH_INTERVAL_S = 0.2


class S3Supervisor:
    """Watches a started EmbeddedS3 from a thread of its own, which also stops it.

    The restarted child is tied to this thread (it dies with it), so the thread stops
    the server on its way out: call ``stop()`` instead of the server's own.
    """

    def __init__(
        self,
        server: EmbeddedS3,
        *,
        first_delay: float = 1.0,
        max_delay: float = 30.0,
        ready_timeout: float = 30.0,
        on_restarted: Callable[[], None] | None = None,
    ) -> None:
        if not 0 < first_delay <= max_delay:
            raise ValueError("restart delays must satisfy 0 < first_delay <= max_delay")
        self._server = server
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._ready_timeout = ready_timeout
        self._on_restarted = on_restarted
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._problem: str | None = None
        self._restarts = 0

    @property
    def problem(self) -> str | None:
        """Why the embedded S3 is down, or None while it runs."""
        return self._problem

    @property
    def restarts(self) -> int:
        """How many times the child was started again after it died."""
        return self._restarts

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the supervisor is already running")
        self._thread = threading.Thread(
            target=self._run, name="embedded-s3-supervisor", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop watching, then stop the server (from the supervisor's thread). Idempotent."""
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        else:
            self._server.stop()

    def _run(self) -> None:
        try:
            delay = self._first_delay
            while not self._stopping.is_set():
                up_since = time.monotonic()
                code = self._wait_for_exit()
                if code is None:
                    return
                if time.monotonic() - up_since >= self._max_delay:
                    delay = self._first_delay
                self._problem = f"the embedded S3 (weed) exited with code {code}; restarting"
                log.error(
                    "embedded S3 exited with code %s; restarting in %.0f s (log %s)",
                    code,
                    delay,
                    self._server.log_path,
                )
                delay = self._restart(delay)
        except Exception:  # the watch must not die silently: readiness would lie
            self._problem = "the embedded S3's supervisor failed; see the log"
            log.exception("embedded S3 supervisor failed")
        finally:
            self._server.stop()

    def _wait_for_exit(self) -> int | None:
        """The child's exit code once it died, or None when asked to stop."""
        while not self._stopping.wait(_WATCH_INTERVAL_S):
            code = self._server.returncode
            if code is not None:
                return code
        return None

    def _restart(self, delay: float) -> float:
        """Try until the child runs again (or we stop); return the next delay to use."""
        attempt = 0
        while not self._stopping.wait(delay):
            attempt += 1
            delay = min(delay * 2, self._max_delay)
            try:
                self._server.restart(self._ready_timeout, abort=self._stopping)
            except EmbeddedS3Error as exc:
                if self._stopping.is_set():
                    break
                first_line = str(exc).splitlines()[0]
                self._problem = (
                    f"the embedded S3 (weed) is down: restart {attempt} failed "
                    f"({first_line}); next try in {delay:.0f} s"
                )
                log.error("embedded S3 restart %d failed: %s", attempt, first_line)
                continue
            self._restarts += 1
            self._problem = None
            log.warning(
                "embedded S3 restarted (pid %s) at %s", self._server.pid, self._server.endpoint_url
            )
            if self._on_restarted is not None:
                try:
                    self._on_restarted()
                except Exception:  # the server runs again; its watch goes on regardless
                    log.exception("after the embedded S3's restart")
            break
        return delay
