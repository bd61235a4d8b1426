"""GET /api/health: is the server up, and what does it serve."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import func, select

from pixsearch.storage.schema import ImageRow
from pixsearch.web.deps import ContextDep
from pixsearch.web.schemas import HealthPublic

router = APIRouter(prefix="/api", tags=["health"])


@router.get("/health", response_model=HealthPublic)
def health(context: ContextDep) -> HealthPublic:
    library = context.library
    with library.session() as session:
        images = session.execute(select(func.count()).select_from(ImageRow)).scalar_one()
        model = library.active_model(session)
    options = context.options
    return HealthPublic(
        status="ok",
        library=str(library.root),
        images=images,
        model=model.spec if model else None,
        captioner=options.captioner,
        answerer=options.answerer,
        entailer=options.entailer,
        patch_scorer=options.patch_scorer,
        reranker=options.reranker or context.settings.reranker,
        rerank_available=context.rerank_hook is not None,
        writes_enabled=options.writes_enabled,
    )
