"""The local dev stack the kit and the playground both use.

`livekit_binary` finds or installs `livekit-server`; `dev_livekit` runs it by
hand with the dev key pair; `livekit_dev` starts a loopback one and mints its
tokens; `launch` runs the `protoface-emulator` command as a child process.
"""
