"""The avatars a session can show: the stock ones and the uploads, with their listing.

An upload is accepted as `processing` and becomes `ready` after
`StoreConfig.avatar_processing_seconds`; stock avatars cannot be deleted.
"""

from __future__ import annotations

import asyncio

from protoface_emulator.api.errors import (
    CODE_AVATAR_NOT_FOUND,
    CODE_INVALID_CURSOR,
    CODE_STOCK_AVATAR_IMMUTABLE,
    forbidden,
    invalid,
    not_found,
    shown,
)
from protoface_emulator.api.ids import new_id
from protoface_emulator.api.queries import AvatarListQuery
from protoface_emulator.api.records import AvatarRecord, stock_avatars, utc_now
from protoface_emulator.api.views import AvatarListView
from protoface_emulator.contract import STOCK_AVATAR_ID

__all__ = ["AvatarCatalog"]


class AvatarCatalog:
    """Stock avatars and uploads, by id.

    Args:
        processing_seconds: how long an upload stays `processing`.
    """

    def __init__(self, processing_seconds: float) -> None:
        self._processing_seconds = processing_seconds
        self._stock: dict[str, AvatarRecord] = {a.id: a for a in stock_avatars()}
        self._custom: dict[str, AvatarRecord] = {}

    def get(self, avatar_id: str) -> AvatarRecord:
        """One avatar. Raises `not_found` (`avatar_not_found`) if unknown."""
        avatar = self._stock.get(avatar_id) or self._custom.get(avatar_id)
        if avatar is None:
            raise not_found(
                CODE_AVATAR_NOT_FOUND,
                f"No avatar {shown(avatar_id)}; list the available ones with GET /v1/avatars "
                f"(the stock avatar is {STOCK_AVATAR_ID!r}).",
                "avatar_id",
            )
        return avatar

    def listing(self, query: AvatarListQuery) -> AvatarListView:
        """Stock avatars first, then uploads newest first, as `query` asks.

        `query.scope` is `stock`, `custom` or `all` (default); `query.q` a
        case-insensitive substring of the name or id; `query.starting_after` the
        `next_cursor` of the previous page.
        """
        candidates: list[AvatarRecord] = []
        if query.scope in (None, "all", "stock"):
            candidates.extend(self._stock.values())
        if query.scope in (None, "all", "custom"):
            candidates.extend(reversed(self._custom.values()))
        if query.q:
            needle = query.q.lower()
            candidates = [
                a for a in candidates if needle in a.name.lower() or needle in a.id.lower()
            ]
        start = 0
        cursor = query.starting_after
        if cursor is not None:
            ids = [a.id for a in candidates]
            if cursor not in ids:
                raise invalid(
                    CODE_INVALID_CURSOR,
                    f"starting_after {shown(cursor)} is not an avatar of this listing; "
                    "pass the next_cursor of the previous page.",
                    "starting_after",
                )
            start = ids.index(cursor) + 1
        page = candidates[start : start + query.limit]
        has_more = start + query.limit < len(candidates)
        return {
            "object": "list",
            "data": [a.view() for a in page],
            "has_more": has_more,
            "next_cursor": page[-1].id if has_more and page else None,
        }

    def create(self, *, name: str, runtime_type: str, image: bytes | None = None) -> AvatarRecord:
        """Accept an upload as `processing`; it becomes `ready` after a short delay.

        `image` is the uploaded file; sessions of this avatar show it.
        """
        avatar = AvatarRecord(
            id=new_id("av"),
            name=name,
            status="processing",
            is_demo=False,
            runtime_type=runtime_type,
            created_at=utc_now(),
            image=image or None,
        )
        self._custom[avatar.id] = avatar
        avatar.ready_timer = asyncio.get_running_loop().call_later(
            self._processing_seconds, self._avatar_ready, avatar
        )
        return avatar

    def _avatar_ready(self, avatar: AvatarRecord) -> None:
        avatar.ready_timer = None
        if avatar.status == "processing":
            avatar.status = "ready"

    def delete(self, avatar_id: str) -> None:
        """Delete an uploaded avatar; a stock avatar is `forbidden`."""
        avatar = self.get(avatar_id)
        if avatar.is_demo:
            raise forbidden(
                CODE_STOCK_AVATAR_IMMUTABLE,
                f"{avatar_id!r} is a stock avatar and cannot be deleted; only uploaded "
                "avatars can.",
                "avatar_id",
            )
        if avatar.ready_timer is not None:
            avatar.ready_timer.cancel()
        del self._custom[avatar_id]

    def close(self) -> None:
        """Stop the uploads' processing timers (the store is shutting down)."""
        for avatar in self._custom.values():
            if avatar.ready_timer is not None:
                avatar.ready_timer.cancel()
                avatar.ready_timer = None
