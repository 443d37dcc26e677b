"""The published surface holds: compared with the real 1.8.9 wheel, downloaded by pip.

Each side is inspected in its own interpreter (the published one via
PYTHONPATH pointing at the unpacked wheel), so neither import shadows the other.
Ours may only add keyword-only parameters with defaults, and names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

PUBLISHED = "livekit-plugins-protoface==1.8.9"

DUMP = r"""
import inspect, json, logging, sys
import livekit.plugins.protoface as pkg
from livekit.plugins.protoface import api as api_mod, avatar as avatar_mod, errors as errors_mod
from livekit.agents import Plugin

def sig(fn):
    out = []
    for p in inspect.signature(fn).parameters.values():
        default = "<required>" if p.default is inspect.Parameter.empty else repr(p.default)
        out.append({"name": p.name, "kind": p.kind.name, "default": default})
    return {"params": out, "coroutine": inspect.iscoroutinefunction(fn)}

AS, API = avatar_mod.AvatarSession, api_mod.ProtofaceAPI
dump = {
    "file": pkg.__file__,
    "version": pkg.__version__,
    "all": {
        "package": sorted(pkg.__all__),
        "api": sorted(getattr(api_mod, "__all__", [])),
        "avatar": sorted(getattr(avatar_mod, "__all__", [])),
    },
    "callables": {
        "ProtofaceAPI.__init__": sig(API.__init__),
        "ProtofaceAPI.start_session": sig(API.start_session),
        "ProtofaceAPI.end_session": sig(API.end_session),
        "AvatarSession.__init__": sig(AS.__init__),
        "AvatarSession.start": sig(AS.start),
        "AvatarSession.aclose": sig(AS.aclose),
        "AvatarSession.wait_for_join": sig(AS.wait_for_join),
    },
    "properties": sorted(n for n in dir(AS) if isinstance(inspect.getattr_static(AS, n), property)),
    "constants": {
        "DEFAULT_API_URL": api_mod.DEFAULT_API_URL,
        "DEFAULT_STOCK_AVATAR_ID": pkg.DEFAULT_STOCK_AVATAR_ID,
        "avatar.DEFAULT_STOCK_AVATAR_ID": avatar_mod.DEFAULT_STOCK_AVATAR_ID,
        "avatar.SAMPLE_RATE": avatar_mod.SAMPLE_RATE,
    },
    "bases": {
        "ProtofaceException": [c.__name__ for c in errors_mod.ProtofaceException.__mro__],
        "AvatarSession": [f"{c.__module__}.{c.__qualname__}" for c in AS.__mro__],
    },
    "same_object": pkg.ProtofaceException is errors_mod.ProtofaceException
        and pkg.AvatarSession is AS,
    "logger": avatar_mod.logger.name,
    "plugins": [p.package for p in Plugin.registered_plugins],
}
print(json.dumps(dump))
"""


def _dump(pythonpath: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    result = subprocess.run(
        [sys.executable, "-c", DUMP], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    dump: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return dump


@pytest.fixture(scope="session")
def published_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The published wheel, downloaded once per test session and unpacked."""
    root = tmp_path_factory.mktemp("published")
    download = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", PUBLISHED, "-d", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert download.returncode == 0, download.stdout + download.stderr
    (wheel,) = root.glob("livekit_plugins_protoface-1.8.9-*.whl")
    unpacked = root / "unpacked"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    return unpacked


@pytest.fixture(scope="session")
def published(published_dir: Path) -> dict[str, Any]:
    dump = _dump(str(published_dir))
    assert dump["version"] == "1.8.9"
    assert dump["file"].startswith(str(published_dir))
    return dump


@pytest.fixture(scope="session")
def ours() -> dict[str, Any]:
    dump = _dump(None)
    assert "livekit-plugins-protoface" in dump["file"]
    return dump


def test_exports_are_a_superset(published: dict[str, Any], ours: dict[str, Any]) -> None:
    for module, names in published["all"].items():
        missing = set(names) - set(ours["all"][module])
        assert not missing, f"{module}.__all__ lost {missing}"


@pytest.mark.parametrize(
    "name",
    [
        "ProtofaceAPI.__init__",
        "ProtofaceAPI.start_session",
        "ProtofaceAPI.end_session",
        "AvatarSession.__init__",
        "AvatarSession.start",
        "AvatarSession.aclose",
        "AvatarSession.wait_for_join",
    ],
)
def test_signatures_only_add_keyword_only_parameters_with_defaults(
    published: dict[str, Any], ours: dict[str, Any], name: str
) -> None:
    theirs_sig, ours_sig = published["callables"][name], ours["callables"][name]
    assert ours_sig["coroutine"] == theirs_sig["coroutine"]

    theirs_params = {p["name"]: p for p in theirs_sig["params"]}
    ours_params = {p["name"]: p for p in ours_sig["params"]}
    for pname, param in theirs_params.items():
        assert pname in ours_params, f"{name} lost parameter {pname}"
        assert ours_params[pname]["kind"] == param["kind"], f"{name}({pname}) changed kind"
        assert ours_params[pname]["default"] == param["default"], f"{name}({pname}) default"

    positional = ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")
    assert [p["name"] for p in ours_sig["params"] if p["kind"] in positional] == [
        p["name"] for p in theirs_sig["params"] if p["kind"] in positional
    ], f"{name} changed its positional parameters"
    for pname, param in ours_params.items():
        if pname not in theirs_params:
            assert param["kind"] == "KEYWORD_ONLY", f"{name} added non-keyword {pname}"
            assert param["default"] != "<required>", f"{name} added required {pname}"


def test_properties_constants_and_bases_hold(
    published: dict[str, Any], ours: dict[str, Any]
) -> None:
    assert set(published["properties"]) <= set(ours["properties"])
    assert ours["constants"] == published["constants"]
    assert ours["bases"]["ProtofaceException"] == published["bases"]["ProtofaceException"]
    base = "livekit.agents.voice.avatar._types.AvatarSession"
    assert base in published["bases"]["AvatarSession"]
    assert base in ours["bases"]["AvatarSession"]
    assert ours["same_object"] and published["same_object"]
    assert ours["logger"] == published["logger"] == "livekit.plugins.protoface"
    assert "livekit.plugins.protoface" in ours["plugins"]
    assert "livekit.plugins.protoface" in published["plugins"]


def test_ships_py_typed_and_stays_a_namespace_package(published_dir: Path) -> None:
    ours_root = Path(__file__).resolve().parents[2] / "livekit-plugins-protoface" / "livekit"
    assert (ours_root / "plugins" / "protoface" / "py.typed").is_file()
    assert not (ours_root / "__init__.py").exists()
    assert not (ours_root / "plugins" / "__init__.py").exists()
    assert (published_dir / "livekit" / "plugins" / "protoface" / "py.typed").is_file()
