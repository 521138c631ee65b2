"""The real gateway binary on 127.0.0.1, and a browser stand-in.

The gateway is started with both listeners on port 0; its start-up log line
("pushgate listening", JSON format) names the bound addresses, so the tests
wait on that line (with a timeout) rather than on a fixed sleep.

The binary is `target/debug/pushgate` of this repository (build it with
`cargo build --bin pushgate`), or the path in the environment variable
PUSHGATE_TEST_BINARY.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Optional, TypeVar, Union

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

REPO = Path(__file__).resolve().parents[3]
#: How long any one thing a test waits for may take before the test fails.
WAIT = 15.0

T = TypeVar("T")


def binary() -> Path:
    """The gateway binary to test."""
    path = Path(os.environ.get("PUSHGATE_TEST_BINARY") or REPO / "target" / "debug" / "pushgate")
    if not path.is_file():
        raise RuntimeError(f"gateway binary {path} not found: run `cargo build --bin pushgate` first")
    return path


class Gateway:
    """One gateway process. `args` are extra command-line flags."""

    def __init__(self, *args: str, internal_addr: str = "127.0.0.1:0") -> None:
        self.args = list(args)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        # The gateway reads PUSHGATE_* settings from the environment: keep the
        # caller's out so only the flags given here apply.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHGATE_") and k != "RUST_LOG"}
        command = [
            str(binary()),
            "--public-addr", "127.0.0.1:0",
            "--internal-addr", internal_addr,
            "--log-format", "json",
            "--log", "info",
            *self.args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        try:
            fields = self.wait_log("pushgate listening")
        except BaseException:
            self.kill()
            raise
        self.public = fields["public_addr"]
        self.internal = fields["internal_addr"]

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def log_records(self) -> list[dict]:
        """The JSON log lines so far."""
        with self._cond:
            lines = list(self.lines)
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except ValueError:
                pass
        return records

    def wait_log(self, message: str, timeout: float = WAIT) -> dict:
        """Waits for a log line whose message is `message`; returns its fields."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    fields = record.get("fields", {})
                    if fields.get("message") == message:
                        return fields
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    log = "\n".join(self.lines[-30:])
                    raise AssertionError(
                        f"gateway never logged {message!r} (exit code {self.process.poll()}); its log:\n{log}"
                    )
                self._cond.wait(min(left, 0.5))

    @property
    def ws_url(self) -> str:
        return f"ws://{self.public}/ws"

    def terminate(self) -> None:
        """Sends SIGTERM: the graceful shutdown."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        """SIGTERM, then waits for the exit (kills after WAIT). Returns the exit code."""
        self.terminate()
        try:
            return self.process.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the gateway did not exit within its drain time after SIGTERM") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "Gateway":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(check: Callable[[], T], what: str, timeout: float = WAIT, interval: float = 0.01) -> T:
    """Polls `check` until it returns a truthy value (returned); fails after
    `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class Browser:
    """A WebSocket client in the wserver-compatible mode, registered as `user`
    for `event` (or a list of events; with `--auth none` the token is the user
    id). Each push
    arrives as one frame: `str` for text, `bytes` for binary."""

    def __init__(self, gateway: Gateway, user: str, event: Union[str, list[str]]) -> None:
        self.user = user
        self._stack = contextlib.ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(gateway.ws_url, open_timeout=WAIT, close_timeout=2)
        )
        register = {"token": user, "event": event} if isinstance(event, str) else {"token": user, "events": event}
        self.ws.send(json.dumps(register))

    def recv(self, timeout: float = WAIT) -> Union[str, bytes]:
        """The next pushed frame."""
        return self.ws.recv(timeout=timeout)

    def recv_many(self, n: int, timeout: float = WAIT) -> list[Union[str, bytes]]:
        return [self.recv(timeout) for _ in range(n)]

    def close_code(self, timeout: float = WAIT) -> Optional[int]:
        """Reads until the server closes the connection; returns its close code.
        Fails if a data frame arrives first."""
        try:
            frame = self.ws.recv(timeout=timeout)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None
        raise AssertionError(f"expected a close, got a frame {frame!r}")

    def close(self) -> None:
        self._stack.close()
