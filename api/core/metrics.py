"""Prometheus metrics of one node, in a registry of its own (several apps can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class NodeMetrics:
    """The node's counters, gauges and histograms; exported at /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.height = Gauge("layerchain_height", "Height of the last committed block.", registry=r)
        self.view = Gauge("layerchain_view", "Current PBFT view.", registry=r)
        self.mempool = Gauge("layerchain_mempool_txs", "Txs waiting to be ordered.", registry=r)
        self.blocks = Counter("layerchain_blocks_committed", "Blocks committed.", registry=r)
        self.txs_committed = Counter("layerchain_txs_committed", "Txs committed.", registry=r)
        self.txs_accepted = Counter(
            "layerchain_txs_accepted", "Txs admitted to the mempool.", ["source"], registry=r
        )
        self.txs_rejected = Counter(
            "layerchain_txs_rejected", "Txs refused at admission.", ["source"], registry=r
        )
        self.view_changes = Counter("layerchain_view_changes", "Views entered.", registry=r)
        self.p2p_sent = Counter(
            "layerchain_p2p_items_sent", "Items sent to peers.", ["peer"], registry=r
        )
        self.p2p_received = Counter(
            "layerchain_p2p_items_received", "Items received from peers.", ["kind"], registry=r
        )
        self.p2p_batches = Counter(
            "layerchain_p2p_batches_received", "Batches received from peers.", registry=r
        )
        self.p2p_send_latency = Histogram(
            "layerchain_p2p_send_seconds",
            "Round trip of one p2p batch.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_latency = Histogram(
            "layerchain_tx_commit_seconds",
            "Admission of a tx at this node to the commit of its block.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.block_apply = Histogram(
            "layerchain_block_apply_seconds",
            "Executing and storing one block.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.state_transfers = Counter(
            "layerchain_state_transfer_blocks", "Blocks fetched by state transfer.", registry=r
        )
        self.tensors_fetched = Counter(
            "layerchain_tensors_fetched", "Tensors fetched from peers.", registry=r
        )
