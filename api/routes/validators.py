"""The validator set with the current view and primary."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import NodeDep

router = APIRouter(prefix="/validators", tags=["validators"])


class ValidatorOut(BaseModel):
    index: int
    address: str
    name: str
    url: str
    is_primary: bool
    is_self: bool
    reachable: bool
    """This node's last message to it was delivered (always true for itself)."""


class ValidatorsOut(BaseModel):
    view: int
    primary: str
    n: int
    f: int
    quorum: int
    validators: list[ValidatorOut]


@router.get("", response_model=ValidatorsOut)
async def validators(node: NodeDep) -> ValidatorsOut:
    """The genesis validator set, which one is primary in the current view, and reachability."""
    view, primary = node.view_and_primary()
    links = node.peers.links
    items = [
        ValidatorOut(
            index=i,
            address=v.address,
            name=v.name,
            url=v.url,
            is_primary=v.address == primary,
            is_self=v.address == node.key.address,
            reachable=v.address == node.key.address
            or (v.address in links and links[v.address].up and not node.peers.isolated),
        )
        for i, v in enumerate(node.genesis.validators)
    ]
    g = node.genesis
    return ValidatorsOut(
        view=view, primary=primary, n=g.n, f=g.f, quorum=g.quorum, validators=items
    )
