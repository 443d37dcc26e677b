"""Build hook: the playground's pinned livekit-client browser bundle goes into the package.

The playground page loads `livekit-client` from its own server, never from a CDN.
The bundle comes from the npm package locked in the repository's
`web/package-lock.json`, and ships at
`protoface_emulator/playground/page/vendor/livekit-client.umd.js` (with its
licence), so an installed wheel needs neither Node.js nor the network.

- Wheel or sdist built in a clone of the repository: the bundle is taken from
  `web/node_modules`, after `npm ci` in `web/` when the installed version is not
  the locked one (so building needs npm and the registry once; the result does not).
- Wheel built from our sdist: the sdist already carries the bundle at its place
  in the package, so nothing is fetched or built (no npm needed).
- Editable install (`uv sync` in the workspace): nothing is copied; the page's
  server reads `web/node_modules` of the clone (see `playground.page_server`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

VENDOR = "protoface_emulator/playground/page/vendor"
BUNDLE = f"{VENDOR}/livekit-client.umd.js"
LICENSE = f"{VENDOR}/livekit-client.LICENSE"
PACKAGE = "livekit-client"


class BundleError(RuntimeError):
    """The bundle could not be provided; the message says what to install or run."""


def _locked_version(web: Path) -> str:
    lock = json.loads((web / "package-lock.json").read_text())
    entry = lock.get("packages", {}).get(f"node_modules/{PACKAGE}")
    if not isinstance(entry, dict) or not isinstance(entry.get("version"), str):
        raise BundleError(f"{web / 'package-lock.json'} does not lock {PACKAGE}")
    return str(entry["version"])


def _installed_version(web: Path) -> str | None:
    manifest = web / "node_modules" / PACKAGE / "package.json"
    try:
        version = json.loads(manifest.read_text()).get("version")
    except (OSError, ValueError):
        return None
    return version if isinstance(version, str) else None


def locked_bundle(web: Path) -> tuple[Path, Path]:
    """The locked livekit-client's browser bundle and licence, installing them if needed.

    Raises:
        BundleError: npm is missing, `npm ci` failed, or the lockfile is wrong.
    """
    want = _locked_version(web)
    if _installed_version(web) != want:
        npm = shutil.which("npm")
        if npm is None:
            raise BundleError(
                f"building protoface-emulator from the repository needs npm to install "
                f"{PACKAGE} {want} from web/package-lock.json: install Node.js with npm, "
                "or build the wheel from the sdist (which carries the bundle)"
            )
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=web, check=True
        )
        if _installed_version(web) != want:
            raise BundleError(f"npm ci in {web} did not install {PACKAGE} {want}")
    dist = web / "node_modules" / PACKAGE
    return dist / "dist" / "livekit-client.umd.js", dist / "LICENSE"


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Adds the livekit-client bundle to the wheel and the sdist."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Put the bundle and its licence in the build (see the module docstring)."""
        if self.target_name == "wheel" and version == "editable":
            return
        root = Path(self.root)
        if (root / BUNDLE).is_file() and (root / LICENSE).is_file():
            return  # an unpacked sdist: the files are in the package already
        web = root.parent / "web"
        if not (web / "package-lock.json").is_file():
            raise BundleError(
                f"no {BUNDLE} in {root} and no web/package-lock.json beside it: build "
                "protoface-emulator from the repository or from its sdist"
            )
        bundle, license_file = locked_bundle(web)
        build_data["force_include"][str(bundle)] = BUNDLE
        build_data["force_include"][str(license_file)] = LICENSE
