"""The consensus driver performs the core's actions under the host contract."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from api.core.driver import ConsensusDriver
from ledger.consensus.events import (
    Broadcast,
    CancelTimer,
    ClientTx,
    Commit,
    FetchBlocks,
    Persist,
    Send,
    SetTimer,
    TimeAdvanced,
    TimerFired,
)


class ScriptedCore:
    """Returns the scripted actions for each event type; records every event it saw."""

    def __init__(self, script: dict[type, list[Any]]) -> None:
        self.script = script
        self.seen: list[Any] = []

    def step(self, event: Any) -> list[Any]:
        self.seen.append(event)
        return list(self.script.get(type(event), []))


class RecordingHost:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def persist(self, record: Any) -> None:
        self.calls.append(("persist", record))

    def flush(self) -> None:
        self.calls.append(("flush", None))

    def send(self, to: str, msg: Any) -> None:
        self.calls.append(("send", (to, msg)))

    def broadcast(self, msg: Any) -> None:
        self.calls.append(("broadcast", msg))

    def commit(self, block: Any, certificate: Any) -> None:
        self.calls.append(("commit", block))

    def fetch_blocks(self, from_height: int, peers: tuple[str, ...]) -> None:
        self.calls.append(("fetch", (from_height, peers)))


def test_persisted_records_are_flushed_before_any_send() -> None:
    core = ScriptedCore(
        {
            ClientTx: [
                Persist("vote-1"),
                Persist("vote-2"),
                Broadcast("prepare"),
                Send("peer", "reply"),
                Persist("vote-3"),
                Send("peer", "commit"),
            ]
        }
    )
    host = RecordingHost()
    ConsensusDriver(core, host, now_ms=lambda: 5).feed([ClientTx("h", object())])
    names = [name for name, _ in host.calls]
    assert names == ["persist", "persist", "flush", "broadcast", "send", "persist", "flush", "send"]
    assert isinstance(core.seen[0], TimeAdvanced) and core.seen[0].now_ms == 5


def test_trailing_persist_is_flushed_and_commit_follows_a_flush() -> None:
    core = ScriptedCore({ClientTx: [Persist("r"), Commit("block", "cert"), Persist("s")]})
    host = RecordingHost()
    ConsensusDriver(core, host).feed([ClientTx("h", None)])
    assert [n for n, _ in host.calls] == ["persist", "flush", "commit", "persist", "flush"]


def test_timers_fire_cancel_and_replace() -> None:
    async def run() -> list[Any]:
        core = ScriptedCore(
            {
                ClientTx: [
                    SetTimer("view", 10),
                    SetTimer("fetch", 10),
                    CancelTimer("fetch"),
                    SetTimer("view", 30),  # replaces the first one
                ]
            }
        )
        driver = ConsensusDriver(core, RecordingHost())
        driver.feed([ClientTx("h", None)])
        await asyncio.sleep(0.1)
        return [e for e in core.seen if isinstance(e, TimerFired)]

    fired = asyncio.run(run())
    assert fired == [TimerFired("view")]


def test_reentrant_feeds_are_queued_not_nested() -> None:
    class Host(RecordingHost):
        driver: ConsensusDriver

        def fetch_blocks(self, from_height: int, peers: tuple[str, ...]) -> None:
            super().fetch_blocks(from_height, peers)
            self.driver.feed([TimerFired("again")])  # re-entrant: must run after this batch

    core = ScriptedCore({ClientTx: [FetchBlocks(3, ("p",)), Broadcast("after")]})
    host = Host()
    host.driver = ConsensusDriver(core, host)
    host.driver.feed([ClientTx("h", None)])
    assert [n for n, _ in host.calls] == ["fetch", "broadcast"]
    assert TimerFired("again") in core.seen


def test_a_failing_core_step_does_not_kill_the_driver() -> None:
    class Broken:
        def step(self, event: Any) -> list[Any]:
            if isinstance(event, ClientTx):
                raise RuntimeError("bug")
            return []

    driver = ConsensusDriver(Broken(), RecordingHost())
    driver.feed([ClientTx("h", None)])
    assert driver.errors == 1


class GatedHost(RecordingHost):
    """A host whose flush (run in the driver's flush thread) blocks until the test opens the
    gate, and which records whether each send came after a finished flush."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.durable = 0
        self.persisted = 0

    def persist(self, record: Any) -> None:
        super().persist(record)
        self.persisted += 1

    def flush(self) -> None:
        target = self.persisted
        assert threading.current_thread() is not threading.main_thread()
        assert self.gate.wait(5)
        self.durable = target
        self.calls.append(("flush", None))

    def send(self, to: str, msg: Any) -> None:
        assert self.durable == self.persisted, "sent before what it depends on was durable"
        super().send(to, msg)

    def broadcast(self, msg: Any) -> None:
        assert self.durable == self.persisted, "sent before what it depends on was durable"
        super().broadcast(msg)


def test_flush_in_thread_holds_every_later_action_until_the_fsync_is_done() -> None:
    async def run() -> tuple[list[str], list[str], Any]:
        core = ScriptedCore(
            {
                ClientTx: [Persist("vote"), Broadcast("prepare"), SetTimer("view", 5000)],
                TimerFired: [Send("peer", "late"), Persist("vote-2"), Broadcast("commit")],
            }
        )
        host = GatedHost()
        driver = ConsensusDriver(core, host, now_ms=lambda: 1, flush_in_thread=True)
        driver.feed([ClientTx("h", None)])
        driver.feed([TimerFired("x")])  # stepped at once; its actions queue behind the flush
        await asyncio.sleep(0.05)
        while_flushing = [n for n, _ in host.calls]
        stepped = [type(e).__name__ for e in core.seen]
        host.gate.set()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if len(host.calls) >= 6:
                break
        driver.cancel_all()
        return while_flushing, stepped, host

    while_flushing, stepped, host = asyncio.run(run())
    assert while_flushing == ["persist"]  # the event loop was free; nothing was sent
    assert stepped.count("ClientTx") == 1 and stepped.count("TimerFired") == 1
    assert [n for n, _ in host.calls] == [
        "persist",
        "flush",
        "broadcast",
        "send",
        "persist",
        "flush",
        "broadcast",
    ]


def test_flush_in_thread_lets_actions_without_persists_through_at_once() -> None:
    async def run() -> list[str]:
        core = ScriptedCore({ClientTx: [Broadcast("status"), Send("peer", "reply")]})
        host = GatedHost()  # gate closed: a flush would hang this test
        driver = ConsensusDriver(core, host, flush_in_thread=True)
        driver.feed([ClientTx("h", None)])
        driver.cancel_all()
        return [n for n, _ in host.calls]

    assert asyncio.run(run()) == ["broadcast", "send"]
