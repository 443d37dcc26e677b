"""The kit's public names: one list, `__all__`, beside the imports that define them.

`protoface_emulator.testing` loads its names on first use: each is imported under
`TYPE_CHECKING` (for type checkers, and read back by `__getattr__` as the map from
a name to its module) and listed once in `__all__`. These tests keep the two in
step, and the names users have from going.
"""

from __future__ import annotations

import importlib

import protoface_emulator.testing as kit

# Every name the kit exported when the layout moved by wing; removing one breaks users.
EXPORTED = {
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
}


def test_the_kit_still_exports_every_name_it_had() -> None:
    assert set(kit.__all__) == EXPORTED
    assert len(kit.__all__) == len(EXPORTED), "a name is listed twice in __all__"


def test_all_and_the_type_checking_imports_list_the_same_names() -> None:
    assert set(kit._homes()) == set(kit.__all__)


def test_each_name_loads_from_its_home() -> None:
    for name, home in kit._homes().items():
        assert getattr(kit, name) is getattr(importlib.import_module(home), name), name
    assert sorted(dir(kit)) == sorted(EXPORTED)
