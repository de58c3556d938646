"""PBFT consensus as a pure state machine, plus a deterministic simulator that proves it.

Host interface (see events.py for the ordering contract and docs/PROTOCOL.md section 7):

    replica = Replica(config, key, app, records=..., committed_height=..., committed_hashes=...)
    actions = replica.start()
    actions = replica.step(Received(msg) | ClientTx(...) | TimerFired(id) | TimeAdvanced(ms)
                           | BlocksFetched(...) | AppReady(height) | PeersAhead(height, peers))

Actions: Send, Broadcast, SetTimer, CancelTimer, Persist, Commit, FetchBlocks.
"""

from ledger.consensus.app import OK, WAIT, Application, Block, Verdict, invalid
from ledger.consensus.config import ConsensusConfig
from ledger.consensus.events import (
    Action,
    AppReady,
    BlocksFetched,
    Broadcast,
    CancelTimer,
    ClientTx,
    Commit,
    Event,
    FetchBlocks,
    PeersAhead,
    Persist,
    Received,
    Send,
    SetTimer,
    TimeAdvanced,
    TimerFired,
)
from ledger.consensus.messages import (
    Checkpoint,
    NewView,
    Prepare,
    PreparedCert,
    PrePrepare,
    Verifier,
    ViewChange,
)
from ledger.consensus.messages import Commit as CommitMsg
from ledger.consensus.replica import FETCH_TIMER, VIEW_TIMER, Replica
from ledger.consensus.wire import (
    message_from_wire,
    message_to_wire,
    record_from_wire,
    record_to_wire,
)

__all__ = [
    "OK",
    "WAIT",
    "Action",
    "AppReady",
    "Application",
    "Block",
    "BlocksFetched",
    "Broadcast",
    "CancelTimer",
    "Checkpoint",
    "ClientTx",
    "Commit",
    "CommitMsg",
    "ConsensusConfig",
    "Event",
    "FETCH_TIMER",
    "FetchBlocks",
    "NewView",
    "PeersAhead",
    "Persist",
    "PrePrepare",
    "Prepare",
    "PreparedCert",
    "Received",
    "Replica",
    "Send",
    "SetTimer",
    "TimeAdvanced",
    "TimerFired",
    "VIEW_TIMER",
    "Verdict",
    "Verifier",
    "ViewChange",
    "invalid",
    "message_from_wire",
    "message_to_wire",
    "record_from_wire",
    "record_to_wire",
]
