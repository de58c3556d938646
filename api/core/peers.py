"""The set of peer links of a validator, with the partition switch used by tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from api.core.metrics import NodeMetrics
from api.p2p.transport import Encoded, PeerLink
from ledger.genesis import Genesis
from ledger.identity import Keypair


class Peers:
    """One `PeerLink` per other validator of the genesis set."""

    def __init__(
        self,
        genesis: Genesis,
        key: Keypair,
        metrics: NodeMetrics,
        batch_max: int,
        timeout_s: float,
        *,
        stream: bool = False,
    ) -> None:
        self.metrics = metrics
        self.isolated = False
        """When set, nothing is sent to peers and everything from them is dropped (tests)."""
        self.links: dict[str, PeerLink] = {}
        for validator in genesis.validators:
            if validator.address == key.address or not validator.url:
                continue
            self.links[validator.address] = PeerLink(
                address=validator.address,
                url=validator.url,
                key=key,
                chain_id=genesis.chain_id,
                batch_max=batch_max,
                timeout_s=timeout_s,
                on_sent=self._sent,
                stream=stream,
            )

    def _sent(self, peer: str, items: int, seconds: float) -> None:
        self.metrics.p2p_sent.labels(peer=peer[:16]).inc(items)
        self.metrics.p2p_send_latency.observe(seconds)

    def start(self) -> None:
        for link in self.links.values():
            link.start()

    async def close(self) -> None:
        for link in self.links.values():
            await link.close()

    def send_consensus(self, to: str, message: Any) -> None:
        link = self.links.get(to)
        if link is not None and not self.isolated:
            link.send_consensus(message)

    def broadcast_consensus(self, message: Any) -> None:
        if not self.isolated:
            encoded = Encoded.of(message)  # once, not once per peer
            for link in self.links.values():
                link.send_consensus(encoded)

    def gossip_txs(self, txs: Iterable[Any]) -> None:
        if self.isolated:
            return
        batch = [Encoded.of(tx) for tx in txs]  # once, not once per peer
        for link in self.links.values():
            for tx in batch:
                link.send_tx(tx)

    def reachable(self) -> list[PeerLink]:
        return [] if self.isolated else list(self.links.values())
