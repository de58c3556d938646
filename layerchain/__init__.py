"""The `layerchain` command: the composition root that wires ledger, api, miner and driver."""
