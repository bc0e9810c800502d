"""Django integrations (extra ``redis-patterns[django]``): the cache backend in ``.cache``, the
session engine in ``.sessions``, rate limits in ``.ratelimit``."""
