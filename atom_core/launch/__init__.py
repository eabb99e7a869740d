"""Starting ATOM: the bundled llama.cpp demo engine and its server process.

Kept light on purpose: ``demo_server`` runs inside the engine's own virtualenv."""
