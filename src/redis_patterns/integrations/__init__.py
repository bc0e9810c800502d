"""Framework integrations (ASGI, Flask); each module imports its own framework."""
