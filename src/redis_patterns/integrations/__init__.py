"""Web framework integrations (ASGI middleware, Flask); each module imports its own framework."""
