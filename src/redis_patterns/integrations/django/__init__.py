"""Django integrations (extra ``redis-patterns[django]``): the session engine in ``.sessions``,
rate limits in ``.ratelimit``."""
