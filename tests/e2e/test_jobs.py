"""Real LiveKit Agents jobs: shutdown ends the hosted session, and jobs run back to back.

The agent runs the way users deploy it: an `AgentServer` registered with
livekit-server, jobs dispatched to it through LiveKit's dispatch API, the thread
executor so both jobs share this one process.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from livekit import api
from livekit.agents import Agent, AgentServer, AgentSession, JobContext
from livekit.agents.voice.room_io import RoomOptions
from livekit.plugins import protoface

from protoface_emulator.server import Emulator
from protoface_emulator.testing import LiveKitServer

from .harness import (
    agent_in,
    eventually,
    load_speech,
    mean,
    play,
    room_name,
    thread_agent_server,
    viewer_in,
)

AVATAR = "protoface-avatar-agent"
AGENT_NAME = "protoface-e2e"


def _plugin_tasks(loop: asyncio.AbstractEventLoop | None = None) -> list[asyncio.Task[Any]]:
    """Unfinished tasks running the plugin's code."""
    tasks = asyncio.all_tasks(loop) if loop is not None else asyncio.all_tasks()
    found = []
    for task in tasks:
        code = getattr(task.get_coro(), "cr_code", None)
        if not task.done() and code is not None and "plugins/protoface" in code.co_filename:
            found.append(task)
    return found


@dataclass
class JobRecord:
    """What one job reports to the test (written from the job's thread)."""

    room: str
    session_id: str | None = None
    stage: str = "dispatched"
    spoke: bool = False
    error: str | None = None
    loop: asyncio.AbstractEventLoop | None = None
    finish: threading.Event = field(default_factory=threading.Event)


@asynccontextmanager
async def agent_server(
    server: LiveKitServer, emulator: Emulator, jobs: dict[str, JobRecord]
) -> AsyncIterator[AgentServer]:
    """An AgentServer whose entrypoint is the quickstart agent from the README."""
    worker = thread_agent_server(server)

    async def entrypoint(ctx: JobContext) -> None:
        record = jobs[ctx.room.name]
        record.loop = asyncio.get_running_loop()
        try:
            record.stage = "connecting"
            await ctx.connect()
            record.stage = "starting avatar"
            session = AgentSession()
            avatar = protoface.AvatarSession(api_url=emulator.url, api_key=emulator.api_key)
            await avatar.start(
                session,
                room=ctx.room,
                livekit_url=server.url,
                livekit_api_key=server.api_key,
                livekit_api_secret=server.api_secret,
            )
            await session.start(
                agent=Agent(instructions="You speak pre-rendered lines."),
                room=ctx.room,
                room_options=RoomOptions(audio_input=False, text_input=False),
            )
            record.session_id = avatar.session_id
            record.stage = "waiting for the avatar to join"
            await avatar.wait_for_join(timeout=20)
            record.stage = "speaking"
            handle = session.say("hi", audio=play(load_speech(seconds=2.0)), add_to_chat_ctx=False)
            await handle.wait_for_playout()
            record.spoke = True
            await asyncio.to_thread(record.finish.wait, 60)
        except Exception as exc:  # reported to the test, which fails on it
            record.error = repr(exc)
        ctx.shutdown(reason="test finished")

    worker.rtc_session(entrypoint, agent_name=AGENT_NAME)
    registered = asyncio.Event()
    worker.on("worker_registered", lambda *_: registered.set())
    run = asyncio.create_task(worker.run(devmode=True))
    try:
        await asyncio.wait_for(registered.wait(), timeout=20)
        yield worker
    finally:
        for record in jobs.values():
            record.finish.set()
        await worker.aclose()
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def _hosted_status(emulator: Emulator, session_id: str) -> dict[str, Any]:
    async with protoface.ProtofaceAPI(api_url=emulator.url, api_key=emulator.api_key) as client:
        return dict(await client.get_session(session_id))


async def test_two_jobs_in_one_process_each_show_the_avatar_and_clean_up_on_shutdown(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    jobs: dict[str, JobRecord] = {}
    async with (
        agent_server(livekit_server, emulator, jobs),
        api.LiveKitAPI(
            livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
        ) as lk,
    ):
        for n in (1, 2):
            room = room_name(f"job{n}")
            record = jobs[room] = JobRecord(room)
            async with viewer_in(livekit_server, room, AVATAR) as viewer:
                await lk.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=room)
                )
                await eventually(
                    lambda r=record: r.spoke or r.error is not None,
                    timeout=40,
                    message=lambda r=record, n=n: f"job {n} never spoke (stuck {r.stage})",
                )
                assert record.error is None, record.error
                assert record.session_id is not None
                assert mean(s.mouth_motion for s in viewer.video) > 1.0
                assert viewer.audio_seconds(min_level=0.05) > 0.5

                # Job shutdown ends the hosted session and the avatar leaves the room.
                record.finish.set()
                session_id = record.session_id

                async def ended(sid: str = session_id) -> bool:
                    return (await _hosted_status(emulator, sid))["status"] == "ended"

                await eventually(ended, timeout=15, message=f"job {n}: hosted session not ended")
                hosted = await _hosted_status(emulator, session_id)
                assert hosted["metadata"].get("_avatar.end_reason") == "end_requested"

                async def only_viewer_left(r: str = room) -> bool:
                    people = await lk.room.list_participants(api.ListParticipantsRequest(room=r))
                    return [p.identity for p in people.participants] == [
                        viewer.room.local_participant.identity
                    ]

                await eventually(
                    only_viewer_left, timeout=15, message=f"job {n}: participants left over"
                )
                assert record.loop is not None
                await eventually(
                    lambda r=record: not _plugin_tasks(r.loop),
                    timeout=5,
                    message=f"job {n}: plugin tasks left over",
                )
    assert emulator.store.active_count == 0


async def test_aclose_ends_hosted_session_and_avatar_leaves(
    livekit_server: LiveKitServer, emulator: Emulator
) -> None:
    room = room_name("aclose")
    async with viewer_in(livekit_server, room, AVATAR) as viewer:
        async with agent_in(livekit_server, emulator, room) as agent:
            await agent.avatar.wait_for_join(timeout=20)
            session_id = agent.avatar.session_id
            assert session_id is not None
            assert AVATAR in viewer.room.remote_participants
            await agent.avatar.aclose()
            await agent.avatar.aclose()  # idempotent
            assert not _plugin_tasks()
            hosted = await _hosted_status(emulator, session_id)
            assert hosted["status"] in {"ending", "ended"}
            await eventually(
                lambda: AVATAR not in viewer.room.remote_participants,
                timeout=10,
                message="the avatar stayed in the room after aclose()",
            )
        assert (await _hosted_status(emulator, session_id))["status"] == "ended"
    assert not _plugin_tasks()
