"""Fixtures for the explorer tests: Debian's headless Chromium (installed when missing), a
Playwright browser on it, and a real 4-validator testnet filled with real activity.

Chromium: if /usr/bin/chromium is absent the session runs `apt-get update && apt-get install -y
chromium` (tests run as root in CI); the browser tests are skipped, with the reason, only when
that is impossible. The machine's network is closed, so Chromium runs with everything that would
phone home switched off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from api.testing import LocalTestnet
from ledger.genesis import Params

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def ensure_chromium() -> str | None:
    """Path of Chromium, installing Debian's package if needed; None (with a reason printed by
    the caller) when it cannot be had."""
    if os.path.exists(CHROMIUM):
        return None
    if shutil.which("apt-get") is None:
        return "apt-get is not available to install chromium"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "chromium is missing and installing it needs root"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-300:]}"
    return None if os.path.exists(CHROMIUM) else "apt-get installed no /usr/bin/chromium"


# Module scope, not session: while sync_playwright() is active it keeps an asyncio loop running
# in the main thread, which breaks every later test that calls asyncio.run().
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = ensure_chromium()
    if problem is not None:
        pytest.skip(f"headless Chromium unavailable: {problem}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    yield tab
    context.close()


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A running 4-validator testnet with transfers, a failed tx, agreed/audited/disputed jobs,
    a DAG edge, an expired job and a training run with checkpoints, all committed by PBFT."""
    from explorer_activity import Activity

    root = tmp_path_factory.mktemp("devnet")
    params = Params(commit_blocks=4, reveal_blocks=4, audit_rate_ppm=300_000)
    with LocalTestnet(root, validators=4, miners=3, params=params) as net:
        net.start_all()
        net.wait_healthy(timeout=60)
        activity = Activity(net)
        activity.run_scenario()
        yield activity
