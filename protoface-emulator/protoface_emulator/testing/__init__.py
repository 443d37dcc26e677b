"""Test an agent with a Protoface avatar in a real room: the kit behind the pytest plugin.

The fixtures (`livekit_server`, `protoface_emulator`, `avatar_viewer`) come with
the package through its pytest plugin (`protoface_emulator.testing.plugin`);
this package holds what tests call:

- `agent_in(server, room, start)`: the agent's participant and `AgentSession` in a
  room, running the user's start function; `agent.say(frames)` speaks.
- `AvatarViewer` / `viewer_in`: a participant recording the avatar's frames, mouth
  and audio, with `wait_for_*` methods; it follows every avatar speaking for an
  agent (replacements, handovers, switches) and names each frame's identity.
- `speech(seconds)`, `tone(seconds)`, `wav_frames(path)`, `play(frames)`:
  pre-rendered agent audio.
- `user_in(server, room)`: a user participant whose microphone can make a noise
  (`user.noise(0.8)`) or speak; `listening_session()`, an `AgentSession` that
  hears it through the stand-in `LevelVAD` and `NoWordsSTT` (false interruptions).
- `eventually(predicate, timeout=...)`: wait for a condition instead of sleeping.
- `local_livekit_server()` (a `with` block), `LiveKitServer`, `mint_token`: a
  loopback `livekit-server --dev` and its participant tokens, outside pytest too.
- `start_emulator_process`: the `protoface-emulator` command as a child process.

Names load on first use (importing the package alone loads no LiveKit code);
`livekit.plugins.protoface` is imported only by `start_avatar_agent`, the
default start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protoface_emulator.local.launch import EmulatorProcess, start_emulator_process
    from protoface_emulator.local.livekit_dev import (
        LiveKitServer,
        LiveKitServerMissing,
        find_livekit_server,
        local_livekit_server,
        mint_token,
        start_livekit_server,
    )
    from protoface_emulator.testing.agent import (
        AgentInRoom,
        StartAgent,
        agent_in,
        start_avatar_agent,
    )
    from protoface_emulator.testing.audio import (
        audio_seconds,
        pcm_frames,
        play,
        speech,
        tone,
        wav_frames,
    )
    from protoface_emulator.testing.user import (
        LevelVAD,
        NoWordsSTT,
        UserInRoom,
        listening_session,
        user_in,
    )
    from protoface_emulator.testing.viewer import (
        AVATAR_IDENTITY,
        AudioSample,
        AvatarViewer,
        VideoSample,
        viewer_in,
    )
    from protoface_emulator.testing.waiting import eventually

# Loaded on first use: the pytest plugin (`testing.plugin`) lives in this package,
# and a pytest run that never touches these names must not pay for importing LiveKit.
_HOMES = {
    "AgentInRoom": "protoface_emulator.testing.agent",
    "StartAgent": "protoface_emulator.testing.agent",
    "agent_in": "protoface_emulator.testing.agent",
    "start_avatar_agent": "protoface_emulator.testing.agent",
    "audio_seconds": "protoface_emulator.testing.audio",
    "pcm_frames": "protoface_emulator.testing.audio",
    "play": "protoface_emulator.testing.audio",
    "speech": "protoface_emulator.testing.audio",
    "tone": "protoface_emulator.testing.audio",
    "wav_frames": "protoface_emulator.testing.audio",
    "LevelVAD": "protoface_emulator.testing.user",
    "NoWordsSTT": "protoface_emulator.testing.user",
    "UserInRoom": "protoface_emulator.testing.user",
    "listening_session": "protoface_emulator.testing.user",
    "user_in": "protoface_emulator.testing.user",
    "EmulatorProcess": "protoface_emulator.local.launch",
    "start_emulator_process": "protoface_emulator.local.launch",
    "LiveKitServer": "protoface_emulator.local.livekit_dev",
    "LiveKitServerMissing": "protoface_emulator.local.livekit_dev",
    "find_livekit_server": "protoface_emulator.local.livekit_dev",
    "local_livekit_server": "protoface_emulator.local.livekit_dev",
    "mint_token": "protoface_emulator.local.livekit_dev",
    "start_livekit_server": "protoface_emulator.local.livekit_dev",
    "AVATAR_IDENTITY": "protoface_emulator.testing.viewer",
    "AudioSample": "protoface_emulator.testing.viewer",
    "AvatarViewer": "protoface_emulator.testing.viewer",
    "VideoSample": "protoface_emulator.testing.viewer",
    "viewer_in": "protoface_emulator.testing.viewer",
    "eventually": "protoface_emulator.testing.waiting",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AVATAR_IDENTITY",
    "AgentInRoom",
    "AudioSample",
    "AvatarViewer",
    "EmulatorProcess",
    "LevelVAD",
    "LiveKitServer",
    "LiveKitServerMissing",
    "NoWordsSTT",
    "StartAgent",
    "UserInRoom",
    "VideoSample",
    "agent_in",
    "audio_seconds",
    "eventually",
    "find_livekit_server",
    "listening_session",
    "local_livekit_server",
    "mint_token",
    "pcm_frames",
    "play",
    "speech",
    "start_avatar_agent",
    "start_emulator_process",
    "start_livekit_server",
    "tone",
    "user_in",
    "viewer_in",
    "wav_frames",
]
