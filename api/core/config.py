"""Node settings: a `config.toml` in the node's home folder, overridden by `LAYERCHAIN_*` variables.

Precedence (highest first): keyword arguments, environment variables, the home folder's
`config.toml`, the defaults below. Relative paths are resolved against the home folder, so a
home folder can be moved or mounted into a container as a whole.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE = "config.toml"


class Settings(BaseSettings):
    """Everything a validator process needs to know before it starts."""

    model_config = SettingsConfigDict(env_prefix="LAYERCHAIN_", extra="forbid")

    home: Path = Field(
        default=Path("."), description="Node home folder; relative paths start here."
    )
    name: str = Field(default="", description="Human-friendly node name (logs, /status).")
    host: str = Field(default="127.0.0.1", description="Interface the HTTP server binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the HTTP server binds.")
    genesis_file: Path = Field(default=Path("genesis.json"))
    key_file: Path = Field(default=Path("node_key.pem"), description="The validator's key.")
    database_url: str = Field(
        default="", description="SQLAlchemy URL of the ledger; default: data/ledger.db in home."
    )
    tensor_dir: Path = Field(default=Path("data/tensors"), description="Content-addressed store.")
    consensus_wal: Path = Field(
        default=Path("data/consensus.wal"),
        description="Append-only fsync'd log of what the consensus core signed.",
    )
    max_tensor_bytes: int = Field(default=64 << 20, ge=1024, description="Largest tensor upload.")
    max_body_bytes: int = Field(default=8 << 20, ge=1024, description="Largest JSON request body.")
    admission_backlog: int = Field(
        default=10_000,
        ge=1,
        description="Txs waiting to be ordered beyond which client submissions get 503.",
    )
    max_batch_txs: int = Field(default=1000, ge=1, description="Most txs in one POST /txs/batch.")
    mempool_limit: int = Field(default=100_000, ge=1, description="Pending txs kept at most.")
    view_timeout_ms: int = Field(
        default=4000, ge=50, description="Base PBFT view-change timeout (doubles on each retry)."
    )
    tick_ms: int = Field(
        default=100,
        ge=1,
        description=(
            "How often the idle core is told the time (every step tells it anyway; its timers "
            "are event-loop timers, so this only bounds the staleness of an idle clock)."
        ),
    )
    partner_wait_s: float = Field(
        default=0.008,
        ge=0,
        le=1,
        description=(
            "As primary, hold a block of lone replica results (commitments or reveals that "
            "complete no job) this long for their partners, so r miners' results share a block "
            "(api/core/partners.py); 0 proposes at once."
        ),
    )
    heartbeat_s: float = Field(
        default=1.0,
        ge=0,
        le=3600,
        description=(
            "While some job is open or revealing, a primary that saw no block for this long "
            "proposes an empty one, so deadlines counted in blocks pass on an idle chain "
            "(api/core/heartbeat.py); 0 never proposes or accepts an empty block."
        ),
    )
    p2p_batch_max: int = Field(default=2000, ge=1, description="Most items in one p2p POST.")
    p2p_stream: bool = Field(
        default=True,
        description=(
            "Send to peers over one long-lived chunked POST /p2p/stream per lane (false: one "
            "POST /p2p/batch per batch, as older nodes do)."
        ),
    )
    p2p_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one p2p request.")
    sync_interval_s: float = Field(
        default=1.0, gt=0, description="How often a node compares its height with its peers'."
    )
    long_poll_max_s: float = Field(default=30.0, gt=0, description="Upper bound of ?wait=.")
    fsync: bool = Field(
        default=True,
        description=(
            "false = UNSAFE benchmark mode (like etcd's --unsafe-no-fsync): the consensus log "
            "is written but not fsync'd, which survives a killed process but not a power loss. "
            "(The SQLite ledger is never fsync'd per block: its tail is refetched from peers.)"
        ),
    )
    test_admin: bool = Field(
        default=False, description="Enable /p2p/admin (partition toggle); tests only."
    )
    log_level: str = Field(default="warning")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read `config.toml` from the home folder named by the arguments or the environment."""
        home: Any = None
        if isinstance(init_settings, InitSettingsSource):
            home = init_settings.init_kwargs.get("home")
        home = home or os.environ.get("LAYERCHAIN_HOME")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if home is not None and (Path(home) / CONFIG_FILE).is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, Path(home) / CONFIG_FILE))
        return tuple(sources)

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        """Make relative paths relative to the home folder, not to the working directory."""
        self.home = self.home.expanduser().resolve()
        for name in ("genesis_file", "key_file", "tensor_dir", "consensus_wal"):
            value: Path = getattr(self, name)
            if not value.is_absolute():
                setattr(self, name, self.home / value)
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'data' / 'ledger.db'}"
        return self

    @property
    def url(self) -> str:
        """This node's own base URL."""
        return f"http://{self.host}:{self.port}"


def load_settings(home: Path | str | None = None, **overrides: Any) -> Settings:
    """Settings for the node whose home folder is `home` (or `$LAYERCHAIN_HOME`)."""
    if home is not None:
        overrides["home"] = Path(home)
    return Settings(**overrides)
