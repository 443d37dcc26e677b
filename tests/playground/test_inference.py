"""An agent using LiveKit Inference in the playground: the user's credentials reach it, or
it is told which variables to set.

The playground points LIVEKIT_API_KEY / LIVEKIT_API_SECRET at its local server,
and livekit-agents' Inference models sign with those when LIVEKIT_INFERENCE_* are
unset (`inference_check` explains). The real-room tests run an agent file
through `agent_process.start_agent`, as the playground does, against a real
livekit-server; no Inference call succeeds here (no network, no account): what
they pin is what the job process is given and what it says.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import Agent, AgentSession

from protoface_emulator.playground.agent_process import start_agent
from protoface_emulator.playground.inference_check import (
    inference_credentials,
    inference_models,
    missing_message,
    missing_variables,
)
from protoface_emulator.testing import LiveKitServer, eventually, viewer_in
from protoface_emulator.testing.user import NoWordsSTT

CLOUD = {
    "LIVEKIT_URL": "wss://my-project.livekit.cloud",
    "LIVEKIT_API_KEY": "key-of-the-users-project",
    "LIVEKIT_API_SECRET": "secret-of-the-users-project-0123456789",
}
INFERENCE = {
    "LIVEKIT_INFERENCE_API_KEY": "inference-key",
    "LIVEKIT_INFERENCE_API_SECRET": "inference-secret-0123456789abcdef",
}


def test_the_users_inference_pair_wins_over_their_cloud_project() -> None:
    assert inference_credentials({**CLOUD, **INFERENCE}) == INFERENCE
    assert missing_variables({**CLOUD, **INFERENCE}) == []


def test_a_livekit_cloud_projects_pair_is_used_for_inference() -> None:
    assert inference_credentials(CLOUD) == {
        "LIVEKIT_INFERENCE_API_KEY": CLOUD["LIVEKIT_API_KEY"],
        "LIVEKIT_INFERENCE_API_SECRET": CLOUD["LIVEKIT_API_SECRET"],
    }


@pytest.mark.parametrize(
    "url", ["ws://127.0.0.1:7880", "ws://localhost:7880", "wss://livekit.example.com", ""]
)
def test_a_pair_for_a_server_that_is_not_livekit_cloud_is_not_sent_to_inference(url: str) -> None:
    env = {**CLOUD, "LIVEKIT_URL": url}
    assert inference_credentials(env) == {}
    assert missing_variables(env) == ["LIVEKIT_INFERENCE_API_KEY", "LIVEKIT_INFERENCE_API_SECRET"]


def test_half_an_inference_pair_names_the_other_half() -> None:
    env = {**CLOUD, "LIVEKIT_INFERENCE_API_KEY": "only-the-key"}
    assert inference_credentials(env) == {}
    assert missing_variables(env) == ["LIVEKIT_INFERENCE_API_SECRET"]
    message = missing_message(["stt deepgram/nova-3"], ["LIVEKIT_INFERENCE_API_SECRET"])
    assert "LIVEKIT_INFERENCE_API_SECRET is not set" in message


async def test_inference_models_are_found_on_the_session_and_the_agent_overrides_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pins livekit-agents' side: model strings become classes of livekit.agents.inference,
    # readable as session.stt / .llm / .tts, and an Agent's own model wins.
    monkeypatch.setenv("LIVEKIT_API_KEY", "devkey")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "x" * 32)
    session: AgentSession[Any] = AgentSession(
        stt="deepgram/nova-3", llm="openai/gpt-4.1-mini", tts="cartesia/sonic-2"
    )
    assert inference_models(session, Agent(instructions="x")) == [
        "stt deepgram/nova-3",
        "llm openai/gpt-4.1-mini",
        "tts cartesia/sonic-2",
    ]
    own_ears = Agent(instructions="x", stt=NoWordsSTT())
    assert inference_models(session, own_ears) == [
        "llm openai/gpt-4.1-mini",
        "tts cartesia/sonic-2",
    ]
    assert inference_models(AgentSession(), Agent(instructions="x")) == []
    assert callable(AgentSession.start)
    for model in (session.stt, session.llm, session.tts):
        assert model is not None
        await model.aclose()  # the LLM prewarms a connection as it is built


AGENT_FILE = """
import logging
import os

from livekit.agents import Agent, AgentServer, AgentSession, JobContext

server = AgentServer()


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    await ctx.connect()
    given = os.environ.get("LIVEKIT_INFERENCE_API_KEY", "")
    logging.getLogger("probe").warning("probe: the job's inference key is %s", given or "unset")
    session = AgentSession(
        stt="deepgram/nova-3", llm="openai/gpt-4.1-mini", tts="cartesia/sonic-2"
    )
    await session.start(agent=Agent(instructions="You help."), room=ctx.room)
"""


async def _run_agent_in_a_room(server: LiveKitServer, folder: Path) -> str:
    """Start the agent file as the playground does, have it join a room; its output."""
    agent_file = folder / "inference_agent.py"
    agent_file.write_text(AGENT_FILE)
    env = {"LIVEKIT_URL": server.url, "LIVEKIT_API_KEY": server.api_key}
    env["LIVEKIT_API_SECRET"] = server.api_secret
    agent = await asyncio.to_thread(start_agent, agent_file, env, verbose=False)

    def output() -> str:
        return agent.log_tail(400)

    try:
        await eventually(
            lambda: agent.registered.is_set() or agent.process.poll() is not None, timeout=90
        )
        assert agent.process.poll() is None, output()
        async with viewer_in(server, f"inference-{uuid.uuid4().hex[:6]}"):
            await eventually(lambda: "probe:" in output(), timeout=90)
            # The session has started (or failed to) once its models have been tried.
            await eventually(lambda: "LiveKit Inference" in output(), timeout=60)
        return output()
    finally:
        await asyncio.to_thread(agent.stop)
        agent.log_path.unlink(missing_ok=True)


@pytest.mark.e2e
async def test_without_credentials_the_session_start_names_the_variables_to_set(
    livekit_server: LiveKitServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (*CLOUD, *INFERENCE):
        monkeypatch.delenv(name, raising=False)
    output = await _run_agent_in_a_room(livekit_server, tmp_path)
    assert "probe: the job's inference key is unset" in output
    assert (
        "this agent uses LiveKit Inference (stt deepgram/nova-3, llm openai/gpt-4.1-mini, "
        "tts cartesia/sonic-2)" in output
    )
    assert "LIVEKIT_INFERENCE_API_KEY and LIVEKIT_INFERENCE_API_SECRET are not set" in output
    assert output.count("this agent uses LiveKit Inference") == 1


@pytest.mark.e2e
async def test_a_livekit_cloud_projects_credentials_reach_the_job_as_inference_credentials(
    livekit_server: LiveKitServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in INFERENCE:
        monkeypatch.delenv(name, raising=False)
    for name, value in CLOUD.items():
        monkeypatch.setenv(name, value)
    output = await _run_agent_in_a_room(livekit_server, tmp_path)
    assert f"probe: the job's inference key is {CLOUD['LIVEKIT_API_KEY']}" in output
    assert "this agent uses LiveKit Inference" not in output
