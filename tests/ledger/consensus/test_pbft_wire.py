"""Messages and records survive the wire (canonical JSON) with signatures intact; garbage is
refused with a clear EncodingError."""

from __future__ import annotations

from typing import Any

import pytest
from pbft_net import Net

from ledger.consensus.messages import Commit, NewView, PrePrepare, fast_signing_bytes
from ledger.consensus.records import (
    PreparedRecord,
    StableRecord,
    ViewChangeRecord,
    VoteRecord,
    compact,
)
from ledger.consensus.simapp import SimBlock
from ledger.consensus.validate import check_new_view
from ledger.consensus.wire import (
    message_from_wire,
    message_to_wire,
    record_from_wire,
    record_to_wire,
)
from ledger.encoding import canonical_json, parse_json, signing_bytes
from ledger.errors import EncodingError


def _through_wire(msg: Any) -> Any:
    raw = parse_json(canonical_json(message_to_wire(msg, SimBlock.to_wire)))
    return message_from_wire(raw, SimBlock.from_wire)


def _view_change_history() -> Net:
    """A cluster that prepared a block, lost the commits and changed view."""
    net = Net()
    net.submit(1)
    net.run(drop=lambda s, d, m: isinstance(m, Commit))
    for i in range(4):
        net.fire(i)
    net.run()
    return net


def test_every_message_kind_round_trips_and_still_verifies() -> None:
    net = _view_change_history()
    kinds = set()
    for msgs in net.sent:
        for msg in msgs:
            back = _through_wire(msg)
            assert type(back) is type(msg)
            assert back.signed_bytes(net.cfg.chain_id) == msg.signed_bytes(net.cfg.chain_id)
            assert net.verifier.message(back, net.cfg.chain_id)
            kinds.add(msg.KIND)
    assert {"pre-prepare", "prepare", "commit", "view-change", "new-view"} <= kinds
    nv = next(m for m in net.sent[1] if isinstance(m, NewView))
    assert check_new_view(net.cfg, net.verifier, _through_wire(nv)) is None


def test_records_round_trip_and_rebuild_the_same_replica() -> None:
    net = _view_change_history()
    for i in range(4):
        encoded = [record_to_wire(r, SimBlock.to_wire) for r in net.records[i]]
        decoded = [
            record_from_wire(parse_json(canonical_json(e)), SimBlock.from_wire) for e in encoded
        ]
        assert [type(r) for r in decoded] == [type(r) for r in net.records[i]]
        net.records[i] = decoded
        rebuilt = net.boot(i)
        assert (rebuilt.view, rebuilt.active) == (net.replicas[i].view, net.replicas[i].active)
        assert rebuilt.sent == net.replicas[i].sent


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ("not an object", "JSON object"),
        ({"type": "teleport"}, "unknown consensus message"),
        ({"type": "prepare", "view": 0}, "missing fields"),
        (
            {
                "type": "prepare",
                "view": -1,
                "height": 1,
                "block_hash": "a" * 64,
                "sender": "b" * 64,
                "signature": "c" * 128,
            },
            "non-negative integer",
        ),
        (
            {
                "type": "commit",
                "view": True,
                "height": 1,
                "block_hash": "a" * 64,
                "sender": "b" * 64,
                "signature": "c" * 128,
            },
            "non-negative integer",
        ),
        (
            {
                "type": "checkpoint",
                "height": 4,
                "block_hash": "zz" * 32,
                "sender": "b" * 64,
                "signature": "c" * 128,
            },
            "hex",
        ),
        (
            {
                "type": "new-view",
                "view": 1,
                "view_changes": [{}] * 2000,
                "pre_prepares": [],
                "sender": "b" * 64,
                "signature": "c" * 128,
            },
            "at most",
        ),
        (
            {
                "type": "pre-prepare",
                "view": 0,
                "height": 1,
                "block_hash": "a" * 64,
                "block": {"height": "x"},
                "sender": "b" * 64,
                "signature": "c" * 128,
            },
            "malformed simulated block",
        ),
    ],
)
def test_garbage_is_refused_with_a_clear_error(raw: Any, complaint: str) -> None:
    with pytest.raises(EncodingError, match=complaint):
        message_from_wire(raw, SimBlock.from_wire)


def test_bad_records_are_refused() -> None:
    with pytest.raises(EncodingError, match="phase"):
        record_from_wire(
            {"record": "vote", "phase": "maybe", "view": 0, "height": 1, "block_hash": "a" * 64},
            SimBlock.from_wire,
        )
    with pytest.raises(EncodingError, match="unknown consensus record"):
        record_from_wire({"record": "diary"}, SimBlock.from_wire)


def test_compact_keeps_only_what_a_restart_needs() -> None:
    net = Net(max_block_txs=1)
    net.submit(*range(10))
    net.run(drop=lambda s, d, m: isinstance(m, PrePrepare) and m.height > 6)
    for i in range(4):
        net.fire(i)
    net.run(drop=lambda s, d, m: isinstance(m, PrePrepare) and m.height > 6)
    records = net.records[1]
    kept = compact(records)
    assert len(kept) < len(records)
    stable = max(r.height for r in kept if isinstance(r, StableRecord))
    assert stable == net.replicas[1].stable_height == 4
    assert all(r.height > stable for r in kept if isinstance(r, VoteRecord))
    assert all(r.cert.height > stable for r in kept if isinstance(r, PreparedRecord))
    assert sum(isinstance(r, ViewChangeRecord) for r in kept) <= 1
    net.records[1] = kept
    rebuilt = net.boot(1)
    assert rebuilt.view == net.replicas[1].view
    assert rebuilt.stable_height == stable
    assert rebuilt.sent == net.replicas[1].sent


def test_fast_signing_bytes_are_exactly_the_canonical_signing_bytes() -> None:
    net = _view_change_history()
    chain = net.cfg.chain_id
    seen = 0
    for msgs in net.sent:
        for msg in msgs:
            fresh = type(msg)(**{k: v for k, v in msg.__dict__.items() if not k.startswith("_")})
            assert fresh.signed_bytes(chain) == signing_bytes(msg.KIND, chain, msg.payload())
            seen += 1
    assert seen > 10
    odd = {"flag": True, "blob": b"\x01", "n": 2**70, "x": [1, "é"]}
    for key, value in odd.items():
        payload = {key: value}
        try:
            expected = signing_bytes("k", chain, payload)
        except EncodingError:
            with pytest.raises(EncodingError):
                fast_signing_bytes("k", chain, payload)
            continue
        assert fast_signing_bytes("k", chain, payload) == expected
