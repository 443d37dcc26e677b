"""The plugin's logger, named like every LiveKit plugin's."""

import logging

logger = logging.getLogger("livekit.plugins.protoface")
