"""The replica driven message by message: normal case, durability, filtering, view change,
censorship, WAIT, watermarks, checkpoints and state transfer."""

from __future__ import annotations

from typing import Any

import pytest
from pbft_net import Net

from ledger.certificate import CommitCertificate, verify_certificate
from ledger.consensus import events as ev
from ledger.consensus.app import OK, WAIT
from ledger.consensus.byzantine import CensoringApp
from ledger.consensus.messages import (
    Checkpoint,
    Commit,
    NewView,
    Prepare,
    PrePrepare,
    ViewChange,
    sign_message,
)
from ledger.consensus.records import VoteRecord
from ledger.consensus.replica import Replica
from ledger.consensus.simapp import SimApp, SimBlock, make_tx
from ledger.identity import Keypair


def _is(kind: type) -> Any:
    return lambda src, dst, msg: isinstance(msg, kind)


def test_normal_case_commits_the_same_blocks_with_valid_certificates(net: Net) -> None:
    txs = net.submit(1, 2, 3)
    net.run()
    assert net.heights()[0] >= 1
    assert len({tuple(b.hash for b, _ in s) for s in net.stores}) == 1
    committed = [h for b, _ in net.stores[0] for h in b.tx_hashes]
    assert sorted(committed) == sorted(txs)
    for block, cert in net.stores[1]:
        verify_certificate(
            cert, net.cfg.chain_id, net.addresses, height=block.height, block_hash=block.hash
        )


def test_several_heights_in_flight_but_never_beyond_the_high_watermark() -> None:
    net = Net(max_block_txs=1)
    net.submit(*range(20))
    net.run(drop=_is(Commit))  # nothing commits, so the window cannot slide
    proposals = [m for m in net.sent[0] if isinstance(m, PrePrepare)]
    assert [p.height for p in proposals] == list(range(1, net.cfg.watermark_window + 1))
    net.queue.clear()
    net2 = Net(max_block_txs=1)
    net2.submit(*range(20))
    net2.run()
    assert net2.heights() == [20, 20, 20, 20]
    assert net2.replicas[0].stable_height == 20


def test_every_signed_vote_is_persisted_before_it_is_sent(net: Net) -> None:
    net.submit(1, 2, 3, 4, 5)
    log: list[tuple[int, list[Any]]] = []
    original = net.perform

    def spy(i: int, actions: list[Any]) -> None:
        log.append((i, actions))
        original(i, actions)

    net.perform = spy  # type: ignore[method-assign]
    net.run()
    persisted: set[tuple[int, str, int, int, str]] = set()
    checked = 0
    for i, actions in log:
        for action in actions:
            if isinstance(action, ev.Persist) and isinstance(action.record, VoteRecord):
                r = action.record
                persisted.add((i, r.phase, r.view, r.height, r.block_hash))
            elif isinstance(action, ev.Broadcast) and isinstance(
                action.msg, PrePrepare | Prepare | Commit
            ):
                m = action.msg
                assert (i, m.KIND, m.view, m.height, m.block_hash) in persisted
                checked += 1
    assert checked > 10


def test_messages_from_outsiders_with_bad_signatures_or_outside_the_window_are_dropped(
    net: Net,
) -> None:
    backup = net.replicas[1]
    primary_key, chain = net.keys[0], net.cfg.chain_id
    block = SimBlock(1, 0, net.cfg.genesis_hash, net.addresses[0], 0, (make_tx(1),))
    good = sign_message(
        primary_key, chain, PrePrepare, view=0, height=1, block_hash=block.hash, block=block
    )
    forged = PrePrepare(0, 1, block.hash, block, net.addresses[0], "00" * 64)
    outsider = Keypair.from_seed(b"\x99" * 32)
    from_outsider = sign_message(
        outsider, chain, PrePrepare, view=0, height=1, block_hash=block.hash, block=block
    )
    from_backup = sign_message(
        net.keys[2], chain, PrePrepare, view=0, height=1, block_hash=block.hash, block=block
    )
    far = net.cfg.watermark_window * 2 + 1
    beyond = sign_message(net.keys[2], chain, Prepare, view=0, height=far, block_hash="ab" * 32)
    future = sign_message(net.keys[2], chain, Prepare, view=9, height=1, block_hash="ab" * 32)
    for msg in (forged, from_outsider, from_backup, beyond, future, "garbage", {"type": "x"}):
        assert backup.step(ev.Received(msg)) == []
    assert backup.accepted == {} and backup.prepares == {}
    actions = backup.step(ev.Received(good))
    assert any(isinstance(a, ev.Broadcast) and isinstance(a.msg, Prepare) for a in actions)


def test_a_restarted_replica_never_signs_two_digests_for_one_view_height_phase(net: Net) -> None:
    chain, primary_key = net.cfg.chain_id, net.keys[0]
    a = SimBlock(1, 0, net.cfg.genesis_hash, net.addresses[0], 0, (make_tx(1),))
    b = SimBlock(1, 0, net.cfg.genesis_hash, net.addresses[0], 1, (make_tx(1),))
    pp_a, pp_b = (
        sign_message(primary_key, chain, PrePrepare, view=0, height=1, block_hash=x.hash, block=x)
        for x in (a, b)
    )
    net.step(1, ev.Received(pp_a))
    assert any(isinstance(r, VoteRecord) and r.block_hash == a.hash for r in net.records[1])

    restarted = net.boot(1)  # rebuilt from what it persisted
    actions = restarted.step(ev.Received(pp_b))
    assert not any(isinstance(x, ev.Broadcast) and isinstance(x.msg, Prepare) for x in actions)

    fresh = Replica(net.cfg, net.keys[1], SimApp(set().__contains__))
    actions = fresh.step(ev.Received(pp_b))  # without those records it would sign b as well
    assert any(isinstance(x, ev.Broadcast) and isinstance(x.msg, Prepare) for x in actions)


class _GatedApp(SimApp):
    """Not ready until `ready` is set: stands for a host that has not executed height - 1."""

    def __init__(self, committed: Any) -> None:
        super().__init__(committed)
        self.ready = False

    def check(self, block: Any, view: int, proposer: str) -> Any:
        return super().check(block, view, proposer) if self.ready else WAIT


def test_wait_defers_the_vote_until_the_host_reports_app_ready() -> None:
    gated = _GatedApp(set().__contains__)
    net = Net(apps={1: gated})
    net.submit(1)
    net.run(drop=lambda s, d, m: d == 1 and not isinstance(m, PrePrepare))
    assert not any(isinstance(m, Prepare) for m in net.sent[1])
    gated.ready = True
    assert gated.check(net.replicas[1].early[(0, 1)].block, 0, net.addresses[0]) == OK
    net.step(1, ev.AppReady(0))
    assert any(isinstance(m, Prepare) for m in net.sent[1])


def test_a_silent_primary_is_replaced_and_the_new_view_commits(net: Net) -> None:
    silent = 0
    net.submit(1, 2)
    net.run(drop=lambda s, d, m: s == silent)
    assert net.heights() == [0, 0, 0, 0]
    for i in (1, 2, 3):
        assert "view" in net.timers[i]
        net.fire(i)
    net.run(drop=lambda s, d, m: s == silent)
    for i in (1, 2, 3):
        assert net.replicas[i].view == 1 and net.replicas[i].active
    assert any(isinstance(m, NewView) for m in net.sent[1])
    assert net.heights()[1:] == [1, 1, 1]
    assert net.stores[1][0][1].view == 1


def test_new_view_re_proposes_a_prepared_block_whose_commits_were_lost(net: Net) -> None:
    net.submit(1)
    net.run(drop=_is(Commit))
    prepared = {i: r.prepared.get(1) for i, r in enumerate(net.replicas)}
    assert all(c is not None for c in prepared.values())
    block_hash = prepared[1].block_hash  # type: ignore[union-attr]
    for i in range(4):
        net.fire(i)
    net.run()
    assert net.heights() == [1, 1, 1, 1]
    assert {s[0][0].hash for s in net.stores} == {block_hash}
    assert net.stores[0][0][1].view == 1


def test_forgetting_prepared_certificates_loses_the_block_the_checker_relies_on() -> None:
    net = Net()
    for i in range(4):
        net.replicas[i] = net.boot(i, bugs=frozenset({"forget_prepared"}))
    net.submit(1)
    net.run(drop=_is(Commit))
    for i in range(4):
        net.fire(i)
    net.run(drop=_is(Commit))
    nv = next(m for m in net.sent[1] if isinstance(m, NewView))
    assert nv.pre_prepares == ()  # the prepared block was not carried into the new view


def test_a_censored_tx_triggers_a_view_change_and_then_commits() -> None:
    net = Net(apps={0: CensoringApp(SimApp(set().__contains__))})
    censored, other = net.submit(3, 4)
    net.run()
    assert all(censored not in c for c in net.committed)
    assert all(other in c for c in net.committed)
    for i in range(4):
        net.fire(i)  # a whole timeout later the tx is still not proposed
    net.run()
    assert all(r.view == 1 for r in net.replicas)
    for i in range(4):
        if "view" in net.timers[i]:
            net.fire(i)
    net.run()
    assert all(censored in c for c in net.committed)


def test_view_change_moves_on_when_a_quorum_gave_up_even_if_some_went_further(net: Net) -> None:
    """Regression: two replicas waited forever in view 1 once a third had moved to view 2."""
    chain = net.cfg.chain_id
    r = net.replicas[1]
    net.fire(1)  # no work: timer not armed, nothing happens
    r._start_view_change(1)  # noqa: SLF001 - drive the state machine directly
    vc = {
        i: sign_message(
            net.keys[i],
            chain,
            ViewChange,
            view=v,
            stable_height=0,
            stable_hash=net.cfg.genesis_hash,
            checkpoint_proof=(),
            prepared=(),
        )
        for i, v in ((2, 1), (3, 2))
    }
    r.step(ev.Received(vc[2]))
    r.step(ev.Received(vc[3]))
    assert r.view == 1 and not r.active
    r.step(ev.TimerFired("view"))
    assert r.view == 2


def test_commit_waits_for_the_parents_commit_in_the_same_view(net: Net) -> None:
    """Regression: a replica sent COMMIT for h with h - 1 prepared but not committed-to."""
    net.submit(1)
    net.submit(2)
    # Replica 1 sees everything except the PREPAREs for height 1 from replica 2 and 3.
    net.run(drop=lambda s, d, m: d == 1 and isinstance(m, Prepare) and m.height == 1)
    r = net.replicas[1]
    assert 2 in r.prepared and 1 not in r.prepared
    assert not any(isinstance(m, Commit) for m in net.sent[1])


def _checkpoint(net: Net, i: int, height: int, block_hash: str) -> Checkpoint:
    return sign_message(
        net.keys[i], net.cfg.chain_id, Checkpoint, height=height, block_hash=block_hash
    )


def test_state_transfer_verifies_certificates_and_commits_in_order(net: Net) -> None:
    lagging = 3
    net.submit(*range(6))
    net.run(drop=lambda s, d, m: d == lagging)
    net.submit(*range(6, 12), to=(0, 1, 2))
    net.run(drop=lambda s, d, m: d == lagging)
    top = net.heights()[0]
    assert top >= 4 and net.heights()[lagging] == 0
    k = net.cfg.checkpoint_interval
    stable = (top // k) * k
    target_hash = net.stores[0][stable - 1][0].hash
    for i in (0, 1, 2):
        net.step(lagging, ev.Received(_checkpoint(net, i, stable, target_hash)))
    fetch = net.fetches[lagging][-1]
    assert fetch.from_height == 1 and set(fetch.peers) == set(net.addresses[:3])

    good = tuple(net.stores[0][:stable])
    block, cert = good[0]
    forged = CommitCertificate(cert.height, cert.view, cert.block_hash, cert.signatures[:2])
    actions = net.step(lagging, ev.BlocksFetched(((block, forged),), net.addresses[0]))
    assert not any(isinstance(a, ev.Commit) for a in actions)
    wrong_chain = good[1:]
    actions = net.step(lagging, ev.BlocksFetched(wrong_chain, net.addresses[0]))
    assert not any(isinstance(a, ev.Commit) for a in actions)

    actions = net.step(lagging, ev.BlocksFetched(good, net.addresses[0]))
    commits = [a.block.height for a in actions if isinstance(a, ev.Commit)]
    assert commits == list(range(1, stable + 1))
    assert net.replicas[lagging].stable_height == stable
    net.fire(lagging, "fetch")  # nothing left to fetch
    assert len(net.fetches[lagging]) == 1


def test_fetch_keeps_rotating_peers_while_checkpoints_keep_coming(net: Net) -> None:
    """Regression: each new checkpoint restarted the transfer at the same (faulty) peer."""
    r = net.replicas[3]

    def fetches(actions: list[Any]) -> list[ev.FetchBlocks]:
        return [a for a in actions if isinstance(a, ev.FetchBlocks)]

    first = [
        f
        for i in (0, 1, 2)
        for f in fetches(r.step(ev.Received(_checkpoint(net, i, 4, "aa" * 32))))
    ]
    assert len(first) == 1
    (rotated,) = fetches(r.step(ev.TimerFired("fetch")))
    assert rotated.peers[0] != first[0].peers[0]
    for i in (0, 1, 2):
        assert fetches(r.step(ev.Received(_checkpoint(net, i, 8, "bb" * 32)))) == []
    assert r.fetch_target == 8
    (later,) = fetches(r.step(ev.TimerFired("fetch")))
    assert later.peers[0] not in (rotated.peers[0],)


def test_constructor_rejects_unknown_bugs_and_foreign_keys(net: Net) -> None:
    with pytest.raises(ValueError, match="unknown planted bugs"):
        net.boot(0, bugs=frozenset({"typo"}))
    with pytest.raises(ValueError, match="not in the validator set"):
        Replica(net.cfg, Keypair.from_seed(b"\x42" * 32), SimApp(set().__contains__))


def test_peers_ahead_starts_state_transfer_from_validators_only(net: Net) -> None:
    outsider = Keypair.from_seed(b"\x43" * 32).address
    assert net.step(3, ev.PeersAhead(5, (outsider,))) == []
    actions = net.step(3, ev.PeersAhead(5, (outsider, net.addresses[1])))
    (fetch,) = [a for a in actions if isinstance(a, ev.FetchBlocks)]
    assert fetch == ev.FetchBlocks(1, (net.addresses[1],))
    assert net.replicas[3].fetch_target == 5


class _HoldingApp(SimApp):
    """A host that holds `held` txs back from its core (admission queue, nonce gaps)."""

    def __init__(self, committed: Any, held: int) -> None:
        super().__init__(committed)
        self.held = held

    def held_txs(self) -> int:
        return self.held


def _left_out_then_timer(held: int) -> Net:
    """Replica 3 holds a tx the primary never proposes while other blocks commit; then
    replica 3's view timer fires (only its own)."""
    net = Net()
    net.apps[3] = _HoldingApp(net.committed[3].__contains__, held)
    net.replicas[3] = net.boot(3)
    net.perform(3, net.replicas[3].start())
    (lone,) = net.submit(1, to=(3,))  # the host's gossip of it is slow: only 3 has it
    net.submit(2)
    net.run()
    assert net.heights() == [1, 1, 1, 1]
    net.fire(3)
    net.run()
    return net


def test_a_tx_queued_behind_the_hosts_backlog_is_not_taken_for_censorship() -> None:
    # Under load a node's core may hold few txs while thousands wait in the node (admission,
    # nonce gaps): a tx left out for a whole timeout is then queued, not censored. Seen in
    # bench/consensus.py at saturation: one backup asked alone for a view change.
    net = _left_out_then_timer(held=Net().cfg.max_block_txs + 1)
    assert net.replicas[3].view == 0 and net.replicas[3].active
    # The same wait with nothing held back is judged censorship, as before.
    control = _left_out_then_timer(held=0)
    assert control.replicas[3].view == 1 and not control.replicas[3].active


def test_a_replica_alone_in_a_higher_view_keeps_committing_what_the_others_commit() -> None:
    # A lone backup that asked for a view change nobody joined used to follow the chain only by
    # state transfer (polled once a second by the node): its clients waited seconds per block.
    net = _left_out_then_timer(held=0)
    lone = net.replicas[3]
    assert lone.view == 1 and not lone.active
    assert all(r.view == 0 and r.active for r in net.replicas[:3])
    sent_before = len(net.sent[3])
    for k in range(3, 6):
        net.submit(k)
        net.run()
    assert net.heights() == [4, 4, 4, 4]
    assert [b.hash for b, _ in net.stores[3]] == [b.hash for b, _ in net.stores[0]]
    assert net.fetches[3] == []  # learned from the others' COMMITs, not by state transfer
    for block, cert in net.stores[3]:
        verify_certificate(
            cert, net.cfg.chain_id, net.cfg.validators, height=block.height, block_hash=block.hash
        )
    assert lone.view == 1 and not lone.active  # it never votes in the view it left
    assert not any(isinstance(m, Prepare | Commit) for m in net.sent[3][sent_before:])


class _HeartbeatApp(SimApp):
    """Wants `due` more empty blocks; as a backup accepts empty blocks while `accept` is set."""

    def __init__(self, committed: Any) -> None:
        super().__init__(committed)
        self.due = 0
        self.accept = False
        self.asked: list[tuple[int, int]] = []

    def heartbeat_due(self, height: int, now_ms: int) -> bool:
        self.asked.append((height, now_ms))
        return self.due > 0

    def propose(self, height: int, view: int, prev_hash: str, txs: Any, *rest: Any) -> Any:
        if txs:
            return super().propose(height, view, prev_hash, txs, *rest)
        self.due -= 1
        return SimBlock(height, view, prev_hash, rest[0], rest[1], ())

    def check(self, block: Any, view: int, proposer: str) -> Any:
        if isinstance(block, SimBlock) and not block.txs and self.accept:
            return OK
        return super().check(block, view, proposer)  # refuses empty blocks


def _heartbeat_net() -> tuple[Net, dict[int, _HeartbeatApp]]:
    net = Net()
    apps = {i: _HeartbeatApp(net.committed[i].__contains__) for i in range(4)}
    net.apps.update(apps)
    net.replicas = [net.boot(i) for i in range(4)]
    return net, apps


def test_an_idle_primary_proposes_an_empty_block_only_when_the_host_asks_for_a_heartbeat() -> None:
    net, apps = _heartbeat_net()
    net.step(0, ev.TimeAdvanced(1_000))  # idle, nothing waits on the height: no block
    net.run()
    assert net.heights() == [0, 0, 0, 0] and apps[0].asked == [(1, 1_000)]
    assert not apps[1].asked  # only the primary is asked

    for app in apps.values():
        app.accept = True
    apps[0].due = 2
    net.step(0, ev.TimeAdvanced(2_000))
    net.step(0, ev.TimeAdvanced(2_050))  # height 1 in flight: no pipelined second heartbeat
    assert [h for h, _ in apps[0].asked] == [1, 1]
    net.run()  # committing height 1 asks for height 2, still due: a second empty block
    assert net.heights() == [2, 2, 2, 2]
    assert [b.tx_hashes for b, _ in net.stores[0]] == [(), ()]
    assert [h for h, _ in apps[0].asked] == [1, 1, 2, 3]

    net.submit(1)  # a tx is proposed as usual; no heartbeat is asked for then
    net.run()
    assert net.heights() == [3, 3, 3, 3] and len(net.stores[0][2][0].tx_hashes) == 1
    assert [h for h, _ in apps[0].asked] == [1, 1, 2, 3, 4]


def test_backups_refuse_an_empty_block_their_hosts_did_not_want() -> None:
    net, apps = _heartbeat_net()
    apps[0].due, apps[0].accept = 1, True  # only the primary wants one (lying, or confused)
    net.step(0, ev.TimeAdvanced(5_000))
    net.run()
    assert net.heights() == [0, 0, 0, 0]
    assert any(isinstance(m, PrePrepare) for m in net.sent[0])
    assert not any(isinstance(m, Prepare) for i in (1, 2, 3) for m in net.sent[i])


def test_idle_backups_replace_a_primary_that_owes_a_heartbeat_and_never_sends_it() -> None:
    """A dead primary on an idle chain: no tx is pending, so no ordinary view timer runs, but
    the backups' hosts say a heartbeat is owed (a deadline waits on the next height). Each backup
    arms its view timer for it; when it fires with no block committed the view changes, and the
    new primary sends the heartbeat."""
    net, apps = _heartbeat_net()
    dead = 0
    for app in apps.values():
        app.due, app.accept = 1, True
    for i in (1, 2, 3):
        net.step(i, ev.TimeAdvanced(2_000))
        assert "view" in net.timers[i], i  # watching for the owed heartbeat
        assert apps[i].asked == [(1, 2_000)]
    net.run(drop=lambda s, d, m: s == dead)
    assert net.heights() == [0, 0, 0, 0]
    for i in (1, 2, 3):
        net.fire(i)
    net.run(drop=lambda s, d, m: s == dead)
    assert all(net.replicas[i].view == 1 and net.replicas[i].active for i in (1, 2, 3))
    net.step(1, ev.TimeAdvanced(9_000))  # the new primary's host still wants the heartbeat
    net.run(drop=lambda s, d, m: s == dead)
    assert net.heights()[1:] == [1, 1, 1]
    assert net.stores[1][0][0].tx_hashes == () and net.stores[1][0][1].view == 1


def test_a_heartbeat_that_commits_in_time_keeps_the_view() -> None:
    net, apps = _heartbeat_net()
    for app in apps.values():
        app.due, app.accept = 1, True
    for i in (1, 2, 3):
        net.step(i, ev.TimeAdvanced(2_000))
    net.step(0, ev.TimeAdvanced(2_000))  # the live primary sends it
    net.run()
    assert net.heights() == [1, 1, 1, 1]
    for i in (1, 2, 3):
        net.fire(i)  # the timer finds the committed height moved: no view change
    net.run()
    assert all(r.view == 0 and r.active for r in net.replicas)
