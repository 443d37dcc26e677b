"""LiveKit Inference in the playground: the user's cloud credentials through, or a clear message.

An agent written like the quickstart names its models as LiveKit Inference
strings (`stt="deepgram/nova-3"`, ...). livekit-agents 1.8.9's
`livekit.agents.inference` signs its gateway requests with
`LIVEKIT_INFERENCE_API_KEY` / `LIVEKIT_INFERENCE_API_SECRET`, else with
`LIVEKIT_API_KEY` / `LIVEKIT_API_SECRET`, read when each model is built. The
playground points the latter at its local livekit-server, so without this
module the agent signs with a key LiveKit Cloud has never seen and its
speech-to-text, LLM and text-to-speech all fail.

So, in the playground's process, `inference_credentials()` reads the user's own
environment (before the playground's `LIVEKIT_*` replace it) and the agent gets
`LIVEKIT_INFERENCE_API_KEY` / `_SECRET`: the user's, or their LiveKit Cloud
project's `LIVEKIT_API_KEY` / `_SECRET` when `LIVEKIT_URL` is that project's
(a self-hosted or dev server's key is refused by the gateway). When there are none,
`guard_job_processes()` makes each job process check, as the agent's session
starts, whether it uses Inference models, and if so log once which variables
to set (`missing_message()`); the job then runs on, its avatar joins, and the
models fail as they would anywhere without credentials (livekit-agents ends the
session after a few failures; the playground and its other tabs go on).

The one livekit-agents seam this relies on: `AgentSession.start(agent, ...)`,
wrapped in the job process, where the session's and the agent's `stt`, `llm`
and `tts` are read (public properties) and Inference models are known by the
package their class comes from. `tests/playground/test_inference.py` pins both.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "INFERENCE_KEY",
    "INFERENCE_SECRET",
    "guard_job_processes",
    "inference_credentials",
    "inference_models",
    "missing_message",
    "missing_variables",
]

INFERENCE_KEY = "LIVEKIT_INFERENCE_API_KEY"
INFERENCE_SECRET = "LIVEKIT_INFERENCE_API_SECRET"
_INFERENCE_PACKAGE = "livekit.agents.inference"

log = logging.getLogger("protoface.playground")


def _is_livekit_cloud(url: str) -> bool:
    # Inference is a LiveKit Cloud service: a self-hosted or dev server's key is refused.
    host = urlsplit(url).hostname or ""
    return host == "livekit.cloud" or host.endswith(".livekit.cloud")


def inference_credentials(user_env: Mapping[str, str]) -> dict[str, str]:
    """The `LIVEKIT_INFERENCE_*` pair for the agent, from the user's own environment, or {}.

    Their `LIVEKIT_INFERENCE_API_KEY` / `_SECRET` when both are set; else their
    `LIVEKIT_API_KEY` / `_SECRET` when `LIVEKIT_URL` is a LiveKit Cloud project's
    (`wss://<project>.livekit.cloud`): a self-hosted or dev server's key is refused.
    """
    key, secret = user_env.get(INFERENCE_KEY, ""), user_env.get(INFERENCE_SECRET, "")
    if key and secret:
        return {INFERENCE_KEY: key, INFERENCE_SECRET: secret}
    if key or secret:
        return {}  # half a pair: missing_variables() names the other half
    key, secret = user_env.get("LIVEKIT_API_KEY", ""), user_env.get("LIVEKIT_API_SECRET", "")
    if key and secret and _is_livekit_cloud(user_env.get("LIVEKIT_URL", "")):
        return {INFERENCE_KEY: key, INFERENCE_SECRET: secret}
    return {}


def missing_variables(user_env: Mapping[str, str]) -> list[str]:
    """The Inference variables to set, in order; [] when `inference_credentials` found a pair."""
    if inference_credentials(user_env):
        return []
    return [name for name in (INFERENCE_KEY, INFERENCE_SECRET) if not user_env.get(name)]


def missing_message(models: list[str], missing: list[str]) -> str:
    """What to tell the user whose agent uses Inference `models` without credentials."""
    return (
        f"this agent uses LiveKit Inference ({', '.join(models)}), which needs your LiveKit "
        f"Cloud project's credentials, and {' and '.join(missing)} "
        f"{'is' if len(missing) == 1 else 'are'} not set. The playground points "
        "LIVEKIT_API_KEY / LIVEKIT_API_SECRET at its local livekit-server, so export "
        f"{INFERENCE_KEY}=<key> {INFERENCE_SECRET}=<secret> (or LIVEKIT_URL=wss://<project>"
        ".livekit.cloud with that project's LIVEKIT_API_KEY and LIVEKIT_API_SECRET) and run the "
        "playground again. Until then the avatar joins, but speech-to-text, the LLM and "
        "text-to-speech fail, and the session ends after a few failures."
    )


def inference_models(session: Any, agent: Any) -> list[str]:
    """The session's effective `stt`, `llm` and `tts` that are LiveKit Inference models,
    as `"stt deepgram/nova-3"` (the agent's own models win, as they do at runtime)."""
    from livekit.agents import utils

    found = []
    for kind in ("stt", "llm", "tts"):
        model = getattr(agent, kind, None)
        if model is None or not utils.is_given(model):
            model = getattr(session, kind, None)
        if model is not None and type(model).__module__.startswith(_INFERENCE_PACKAGE):
            found.append(f"{kind} {getattr(model, 'model', '?')}")
    return found


def guard_job_processes(server: Any, missing: list[str]) -> None:
    """Have every job process of `server` (an `AgentServer`) say when Inference lacks `missing`.

    Wraps its `setup_fnc`, which runs once in each job process before any job
    (and is pickled there by reference: a partial of a module-level function).
    """
    server.setup_fnc = functools.partial(_prepare_job_process, server.setup_fnc, list(missing))


def _prepare_job_process(setup: Callable[[Any], Any] | None, missing: list[str], proc: Any) -> Any:
    _watch_session_starts(missing)
    return setup(proc) if setup is not None else None


def _watch_session_starts(missing: list[str]) -> None:
    from livekit.agents import AgentSession

    start = AgentSession.start
    if getattr(start, "_protoface_checks_inference", False):
        return

    @functools.wraps(start)
    async def checked_start(self: Any, agent: Any, *args: Any, **kwargs: Any) -> Any:
        models = inference_models(self, agent)
        if models:
            log.error("%s", missing_message(models, missing))
        return await start(self, agent, *args, **kwargs)

    checked_start._protoface_checks_inference = True  # type: ignore[attr-defined]
    AgentSession.start = checked_start  # type: ignore[method-assign]
