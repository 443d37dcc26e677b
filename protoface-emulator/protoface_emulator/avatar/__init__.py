"""The participant that renders: the avatar worker a session puts in its room.

`worker` joins the room, hears the agent's audio (`notices` reads the agent's
playback and interruption notices), and publishes the face `face` draws. It
meets the API's wing only through `lifecycle`.
"""
