"""Annotated dependency aliases over the lifespan state, so handlers declare what they use."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.neuroon.client import NeuroonClient
from app.state import GatewayState


async def get_state(request: Request) -> GatewayState:
    # async on purpose: FastAPI runs a plain `def` dependency in a thread pool, per request.
    state: GatewayState = request.state.gateway
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]


async def get_neuroon(request: Request) -> NeuroonClient:
    state: GatewayState = request.state.gateway
    return state.neuroon


NeuroonDep = Annotated[NeuroonClient, Depends(get_neuroon)]
