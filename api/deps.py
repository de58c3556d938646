"""Route dependencies as `Annotated` aliases (full-stack-fastapi-template style)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.core.config import Settings
from api.core.node import Node


def get_node(request: Request) -> Node:
    """The running node this app serves."""
    node: Node = request.app.state.node
    return node


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.node.settings
    return settings


NodeDep = Annotated[Node, Depends(get_node)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
