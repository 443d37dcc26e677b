"""`AvatarSession.switch()` refuses what it cannot do before anything goes over the network.

No server is needed: these are refused before a request (the real-room
switching is in tests/e2e/test_switch.py).
"""

from __future__ import annotations

import pytest
from livekit.plugins import protoface

from .helpers import API_KEY


async def test_switch_before_start_says_to_start_first() -> None:
    avatar = protoface.AvatarSession(api_key=API_KEY, api_url="http://127.0.0.1:9")
    with pytest.raises(protoface.ProtofaceException, match=r"start\(\) first"):
        await avatar.switch(avatar_id="av_stock_002")
    assert avatar.avatar_id == "av_stock_001" and avatar.usage == protoface.AvatarUsage()
    await avatar.aclose()


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"quality": "ultra"}, "quality"),
        ({"avatar_id": "  "}, "avatar_id"),
        ({"max_duration_seconds": 0}, "max_duration_seconds"),
        ({"idle_timeout_seconds": True}, "idle_timeout_seconds"),
        ({"metadata": {"_avatar.x": 1}}, "metadata"),
    ],
)
async def test_bad_switch_options_are_refused_naming_the_option(
    options: dict[str, object], param: str
) -> None:
    avatar = protoface.AvatarSession(api_key=API_KEY, api_url="http://127.0.0.1:9")
    with pytest.raises(protoface.ProtofaceValueError) as refused:
        await avatar.switch(**options)  # type: ignore[arg-type]
    assert refused.value.param is not None and refused.value.param.startswith(param)
    await avatar.aclose()
