"""A local Protoface: the public API and a real LiveKit avatar worker."""
