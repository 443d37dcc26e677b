"""The HTTP side: the Protoface public API the plugin calls.

A request flows `app` (routes from `urls`, bodies read by `reading`) → `checks`,
`decoding`, `requests` or `queries` → `store` (sessions, avatars, usage; `faults`
injected on demand) → `views` back out. The store starts and ends workers through
`lifecycle.WorkerFactory`, the seam to the avatar's wing: nothing here imports
`avatar/` or `hosting/`.
"""
