"""The kit's public names: one set, kept in step across the three places that list it.

`protoface_emulator.testing` loads its names on first use, so each is written
three times: imported under `TYPE_CHECKING` (for type checkers), mapped to its
home in `_HOMES` (for `__getattr__`), and listed in `__all__`. Type checkers
need the literal `__all__` and the imports, and the runtime needs the map; these
tests are what keep the three from drifting, and the names users have from going.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

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


def _type_checking_imports() -> dict[str, str]:
    """Name -> module, as the `if TYPE_CHECKING:` block of the kit's `__init__` imports it."""
    tree = ast.parse(Path(kit.__file__).read_text())
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for item in node.body:
                assert isinstance(item, ast.ImportFrom) and item.module is not None
                found.update({alias.name: item.module for alias in item.names})
    return found


def test_the_kit_still_exports_every_name_it_had() -> None:
    assert set(kit.__all__) == EXPORTED
    assert len(kit.__all__) == len(EXPORTED), "a name is listed twice in __all__"


def test_all_the_lazy_map_and_the_type_checking_imports_list_the_same_names() -> None:
    homes = kit._HOMES
    assert set(homes) == set(kit.__all__)
    assert _type_checking_imports() == homes


def test_each_name_loads_from_its_home() -> None:
    for name, home in kit._HOMES.items():
        assert getattr(kit, name) is getattr(importlib.import_module(home), name), name
    assert sorted(dir(kit)) == sorted(EXPORTED)
