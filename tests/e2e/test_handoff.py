"""examples/handoff.py in a real room: a tool call hands the caller over, and the face changes.

The example's own `Receptionist` and `Specialist` run in one `AgentSession`
with one Protoface `AvatarSession` (livekit-server and the emulator's real
workers on loopback). The caller's question goes through the session's LLM,
whose tool call returns the `Specialist`; its `on_enter` switches the avatar to
its own face. A `FaceWatch` in the room tells from the pixels which face shows.

The LLM is scripted (`ScriptedLLM` below, written on livekit-agents' LLM
extension API): no real model can run offline. It calls
`transfer_to_specialist` when asked a technical question and otherwise answers
in text; there is no TTS either, so the specialist's spoken line is a
pre-rendered one said through the same session.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    AgentSession,
    APIConnectOptions,
    NotGivenOr,
    llm,
)
from livekit.agents.voice.room_io import RoomOptions
from livekit.plugins import protoface

from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer, agent_in
from protoface_emulator.testing.faces import FaceWatch

from .harness import eventually, load_speech, room_name, token, viewer_in

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "handoff.py"
SPECIALIST_IDENTITY = "protoface-avatar-agent-2"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("handoff_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class ScriptedLLM(llm.LLM):
    """Calls `transfer_to_specialist` when the last user message asks for it; else a short text."""

    def __init__(self) -> None:
        super().__init__()
        self.tool_calls: list[str] = []

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        return _ScriptedStream(
            self, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options
        )


class _ScriptedStream(llm.LLMStream):
    async def _run(self) -> None:
        owner = self._llm
        assert isinstance(owner, ScriptedLLM)
        last = next(
            (m for m in reversed(self._chat_ctx.messages()) if m.role in ("user", "assistant")),
            None,
        )
        asked = (
            last is not None and last.role == "user" and "technical" in (last.text_content or "")
        )
        offered = {getattr(t, "id", "") for t in self._tools}
        chunk_id = uuid.uuid4().hex
        if asked and "transfer_to_specialist" in offered:
            owner.tool_calls.append("transfer_to_specialist")
            call = llm.FunctionToolCall(
                name="transfer_to_specialist", arguments=json.dumps({}), call_id=chunk_id
            )
            delta = llm.ChoiceDelta(role="assistant", tool_calls=[call])
        else:
            delta = llm.ChoiceDelta(role="assistant", content="Hello.")
        self._event_ch.send_nowait(llm.ChatChunk(id=chunk_id, delta=delta))


async def test_a_tool_call_hands_over_to_the_specialist_who_shows_his_own_face(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    example = _load_example()
    scripted = ScriptedLLM()
    room = room_name("handoff")
    watch = FaceWatch()
    await watch.connect(livekit_server.url, token(livekit_server, "face-watch", room))
    switched: list[protoface.AvatarSwitchedEvent] = []

    async def start(session: AgentSession[Any], agent_room: rtc.Room) -> protoface.AvatarSession:
        avatar = protoface.AvatarSession(
            avatar_id=example.RECEPTIONIST_AVATAR_ID,
            api_url=emulator.url,
            api_key=emulator.api_key,
            quality="lite",
        )
        avatar.on("avatar_switched", switched.append)
        await avatar.start(
            session,
            agent_room,
            livekit_url=livekit_server.url,
            livekit_api_key=livekit_server.api_key,
            livekit_api_secret=livekit_server.api_secret,
        )
        await session.start(
            agent=example.Receptionist(avatar),
            room=agent_room,
            room_options=RoomOptions(audio_input=False),
        )
        return avatar

    try:
        async with (
            viewer_in(livekit_server, room, SPECIALIST_IDENTITY) as specialist_view,
            agent_in(livekit_server, room, start, session=AgentSession(llm=scripted)) as agent,
        ):
            avatar = agent.avatar
            await avatar.wait_for_join(timeout=60)
            await watch.wait_for_face("av_stock_001", timeout=60)

            asked = time.monotonic()
            agent.session.generate_reply(user_input="I have a technical question.")
            switched_at = await watch.wait_for_face("av_stock_002", timeout=90)
            assert scripted.tool_calls == ["transfer_to_specialist"]
            assert type(agent.session.current_agent).__name__ == "Specialist"
            await eventually(lambda: bool(switched), timeout=60, message=lambda: "no event")
            assert switched[0].avatar_id == "av_stock_002" == avatar.avatar_id
            assert switched[0].previous_avatar_id == "av_stock_001"
            assert avatar.avatar_identity == SPECIALIST_IDENTITY

            # The specialist speaks through his own avatar.
            since = time.monotonic()
            await agent.speak(load_speech(seconds=1.0), timeout=30)
            await specialist_view.wait_for_audio(0.3, timeout=30, since=since)
            # Ada was on screen until Bram came up; no other face in between.
            assert set(watch.faces(until=switched_at)) - {None} == {"av_stock_001"}
            gap = watch.largest_gap(since=asked)
            print(f"\nhandoff: largest video gap at the viewer {gap * 1000:.0f} ms")
    finally:
        await watch.aclose()
