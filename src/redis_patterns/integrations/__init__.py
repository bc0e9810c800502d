"""Web framework integrations: ASGI middleware and Flask helpers; each imports its framework."""
