"""Recommendations of a user, and why an item is recommended."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from evorec.serving.deps import ReadKey, ServiceDep
from evorec.serving.schemas import ExplanationOut, RecommendationsOut

router = APIRouter(tags=["recommendations"])


@router.get("/v1/users/{user_id}/recommendations", response_model=RecommendationsOut)
def recommendations(
    user_id: str,
    _: ReadKey,
    service: ServiceDep,
    k: Annotated[int, Query(ge=1, description="how many items")] = 10,
    exclude_seen: Annotated[bool | None, Query(description="leave out items the user already interacted with (default true; not with mode)")] = None,
    category: Annotated[str | None, Query(description="only items of this category")] = None,
    mode: Annotated[str | None, Query(
        description="buy_again: only items the user had before; explore: only items new to the user; mixed: both, in the "
        "model's order (a repeat-aware model such as trex ranks the due repeats first). Replaces exclude_seen",
    )] = None,
) -> RecommendationsOut:
    return service.recommend(user_id, k, exclude_seen, category, mode)


@router.get("/v1/users/{user_id}/explanations", response_model=ExplanationOut)
def explanations(
    user_id: str,
    _: ReadKey,
    service: ServiceDep,
    item_id: Annotated[str, Query(min_length=1, max_length=256, description="the recommended item to explain")],
    method: Annotated[str, Query(pattern="^(auto|integrated_gradients|occlusion)$")] = "auto",
    steps: Annotated[int, Query(ge=4, le=256, description="integrated-gradients steps")] = 32,
) -> ExplanationOut:
    return service.explain(user_id, item_id, method, steps)
