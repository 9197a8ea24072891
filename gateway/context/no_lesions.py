"""The lesion part of the desk until the lesion registry is merged.

PLACEHOLDER: :class:`gateway.context.lesion_desk.LesionDesk` (the lesion registry's
mixin) replaces :class:`NoLesionDesk` among :class:`gateway.context.stage.ContextStage`'s
bases; until then choosing a lesion is refused with a plain message.
"""

from __future__ import annotations

from gateway.context.base import StageBase
from gateway.context.desk import (
    Actor,
    ContextError,
    ContextErrorCode,
    LesionRequest,
    LesionView,
)

__all__ = ["NoLesionDesk"]


class NoLesionDesk(StageBase):
    """``set_lesion`` and ``lesions`` before the lesion registry exists."""

    async def set_lesion(self, session_id: int, request: LesionRequest, actor: Actor) -> LesionView:
        """Refused: lesions are not available yet."""
        raise ContextError(ContextErrorCode.BAD_REQUEST, "lesions are not available yet")

    async def lesions(self, session_id: int) -> list[LesionView]:
        """Refused: lesions are not available yet."""
        raise ContextError(ContextErrorCode.BAD_REQUEST, "lesions are not available yet")
