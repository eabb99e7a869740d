"""Talking to model servers: the client, model listing, one stream class per chat route,
the one HTTP status/transport -> error seam, and model admin (load, unload, download)."""
