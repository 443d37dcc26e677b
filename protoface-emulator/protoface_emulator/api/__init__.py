"""The HTTP side: the Protoface public API the plugin calls.

A request flows `app` (routes from `urls`, bodies read by `reading`) → `schema`
(parsing, checks, views) → `store` (sessions, avatars, usage; `faults` injected
on demand) → `lifecycle.WorkerFactory`, the seam to the avatar's wing. Nothing
here imports `avatar/` or `hosting/`.
"""
