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

import ast
import functools
import importlib
from pathlib import Path
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
# The `TYPE_CHECKING` imports above are the one map from a name to its module: type
# checkers read them, and `__getattr__` reads the same statements from this file.


@functools.cache
def _homes() -> dict[str, str]:
    """Name -> module, as the `if TYPE_CHECKING:` block of this file imports it."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    homes: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for item in node.body:
                if isinstance(item, ast.ImportFrom) and item.module is not None:
                    homes.update({alias.name: item.module for alias in item.names})
    return homes


def __getattr__(name: str) -> Any:
    home = _homes().get(name) if name in __all__ else None
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
