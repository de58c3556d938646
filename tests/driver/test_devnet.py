"""`layerchain devnet`: trains through 4 validators and 3 miners, prints accuracy, run id and the
explorer URL, and leaves no process behind — after a normal exit and after Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SMALL = ["--epochs", "1", "--batch", "512", "--hidden", "8", "--shards", "2"]


def processes_under(root: Path) -> list[int]:
    """Pids of live processes whose command line names a path inside `root`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if str(root) in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def devnet(root: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "layerchain", "devnet", "--dir", str(root), *SMALL, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_devnet_trains_prints_results_and_stops_everything(tmp_path: Path) -> None:
    root = tmp_path / "net"
    proc = devnet(root)
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    accuracy = re.search(r"test accuracy: ([0-9.]+)%", out)
    assert accuracy is not None and float(accuracy.group(1)) > 30.0
    assert re.search(r"run id: digits-s0-[0-9a-f]{8}", out)
    assert re.search(r"explorer: http://127\.0\.0\.1:\d+/", out)
    assert "weights hash identical to --local" in out
    assert "every process has exited" in err
    assert processes_under(root) == []
    for i in range(3):
        assert (root / "logs" / f"miner{i}.json").is_file()


def test_ctrl_c_during_training_stops_every_process(tmp_path: Path) -> None:
    root = tmp_path / "net"
    proc = devnet(root, "--epochs", "5")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(processes_under(root)) < 8:
        time.sleep(0.2)
    children = [p for p in processes_under(root) if p != proc.pid]
    assert len(children) >= 7, "4 validators and 3 miners should be running"
    time.sleep(2.0)  # let training begin
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "stopping the devnet" in err
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"process {pid} survived"
    assert processes_under(root) == []


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_devnet_keep_runs_until_sigterm_then_cleans_up(tmp_path: Path) -> None:
    root = tmp_path / "net"
    proc = devnet(root, "--keep", "--no-verify-local")
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + 400
    while "Ctrl-C to stop" not in seen and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert "Ctrl-C to stop" in seen
    assert len(processes_under(root)) >= 8
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=60)
    assert processes_under(root) == []
