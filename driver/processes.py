"""`Processes`: child processes that cannot outlive the program that started them.

Each child runs in its own session (so a Ctrl-C in the terminal reaches only the parent, which
then stops the children in order) and is stopped by process group: SIGTERM, a grace period,
then SIGKILL. `stop_all` runs from the context manager's exit, from an `atexit` hook and from
SIGTERM/SIGHUP handlers, so the children go away however the parent ends (short of SIGKILL).
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

from ledger.errors import LedgerError


class ProcessError(LedgerError):
    """A child process exited early or never became healthy."""


class Processes:
    """A set of named child processes (see the module docstring)."""

    def __init__(self, log_dir: Path, grace_s: float = 5.0) -> None:
        self.log_dir = log_dir
        self.grace_s = grace_s
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self._previous: dict[int, object] = {}
        self._closed = False
        atexit.register(self.stop_all)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            try:
                self._previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: the atexit hook and __exit__ still apply
                pass

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_all()
        raise SystemExit(128 + signum)

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        """Start `python -m layerchain ARGS` as `name`; its output goes to LOG_DIR/NAME.log."""
        if name in self.procs and self.procs[name].poll() is None:
            raise ProcessError(f"{name} is already running")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs[name] = log
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "layerchain", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def running(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ProcessError(
                    f"{name} exited with status {proc.returncode}:\n{self.log_tail(name)}"
                )

    def wait_healthy(self, urls: dict[str, str], timeout: float = 60.0) -> None:
        """Wait until each named process answers GET URL with 200 (raises if one died)."""
        deadline = time.monotonic() + timeout
        pending = dict(urls)
        with httpx.Client(timeout=2.0) as client:
            while pending:
                for name, url in list(pending.items()):
                    if not self.running(name):
                        self.check_alive()
                    try:
                        if client.get(url).status_code == 200:
                            del pending[name]
                    except httpx.HTTPError:
                        pass
                if pending and time.monotonic() > deadline:
                    raise ProcessError(f"{sorted(pending)} not healthy after {timeout:.0f} s")
                time.sleep(0.1)

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Signal the process group of `name`, wait `grace_s`, then SIGKILL it."""
        proc = self.procs.pop(name, None)
        if proc is not None:
            _stop_group(proc, sig, self.grace_s)
        log = self._logs.pop(name, None)
        if log is not None:
            log.close()

    def stop_all(self) -> None:
        """Stop every child: all get SIGTERM at once, then each is waited for (or killed)."""
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGTERM)
        for name in list(reversed(self.procs)):
            self.stop(name)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop_all()
        atexit.unregister(self.stop_all)
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _stop_group(proc: subprocess.Popen[bytes], sig: int, grace_s: float) -> None:
    _signal_group(proc, sig)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait(5)
    # Anything the child left in its group (it runs in its own session) goes too.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
