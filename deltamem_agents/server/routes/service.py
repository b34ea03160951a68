"""``GET /health`` (no key needed: load balancers call it) and ``GET /v1/models``."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from deltamem_agents.server.auth import Principal, principal
from deltamem_agents.server.context import ServerContext, context
from deltamem_agents.server.errors import ERROR_RESPONSES
from deltamem_agents.server.schemas import Health, ModelCard, ModelList

router = APIRouter(tags=["service"])


@router.get("/health", response_model=Health, summary="Liveness, configuration, scheduler and warm-session counters")
async def health(ctx: ServerContext = Depends(context)) -> Health:
    return Health(
        model=ctx.settings.model_name,
        backbone=ctx.memory.runtime.backbone_name,
        batching=ctx.scheduler.batcher is not None,
        textlog=ctx.memory.textlog is not None,
        auth_required=ctx.authenticator.required,
        scheduler=ctx.scheduler.stats(),
        warm_sessions=ctx.memory.runtime.warm_sessions(),
    )


@router.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES, summary="The served model")
async def models(ctx: ServerContext = Depends(context), who: Principal = Depends(principal)) -> ModelList:
    return ModelList(data=[ModelCard(id=ctx.settings.model_name, created=ctx.started)])
