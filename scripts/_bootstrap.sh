# Sourced by scripts/test and scripts/demo: makes a bare machine (Python 3.10+, Go)
# ready: uv, the locked Python environment, and livekit-server. Exports
# LIVEKIT_SERVER_BIN. Safe to run again: each step is a no-op once done.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

if ! command -v uv >/dev/null 2>&1; then
  export PATH="$HOME/.local/bin:$PATH"
fi
if ! command -v uv >/dev/null 2>&1; then
  echo "bootstrap: installing uv with pip" >&2
  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
  hash -r
fi

uv sync --frozen --all-packages --quiet

LIVEKIT_SERVER_BIN="$("$repo_root/scripts/install-livekit-server")"
export LIVEKIT_SERVER_BIN
