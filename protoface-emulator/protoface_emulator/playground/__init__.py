"""The playground: see, hear and talk to a Protoface avatar in a browser, offline.

    protoface-emulator playground [--port PORT] [--agent FILE] [--open] [--verbose]

It starts `livekit-server --dev`, the `protoface-emulator` command and an agent
worker on 127.0.0.1, serves a page, and prints `playground: http://127.0.0.1:PORT/`
once everything is ready. The page and a pinned `livekit-client` browser bundle
ship inside the package (built from `web/package-lock.json` when the wheel is
built), so it needs no Node.js and no network.

Modules, in the order a run goes through them:

- `command`: the command line, and a supervisor that runs everything else in a
  process group of its own and kills that group on the way out;
- `stack`: starts the servers and the agent, serves the page, stops it all;
- `agent_process`: the agent worker as a child process, its output relayed;
- `run_agent`: runs an agent file as a LiveKit Agents worker the way
  livekit-agents recommends (`python -m livekit.agents start FILE --dev`);
- `page_server`: the page, its `livekit-client` bundle, and the small API the
  page calls (tokens, the emulator's sessions);
- `echo_agent`: the bundled agent, which says your own words back.

Needs `pip install "protoface-emulator[playground]"` (the plugin, for the
bundled agent) and a livekit-server binary (`protoface-emulator
install-livekit-server`).
"""
