"""The old private home of `connect`, `EmbeddedServer` and `EmbeddedCluster`, re-exported.

They live in ``_connect``, ``_embedded`` and ``_embedded_cluster`` now; import from there (or
from ``redis_patterns``). Kept while ``integrations/django/_location.py`` and a fault test still
import from here.
"""

from ._clients import DEFAULT_CONNECT_TIMEOUT, DEFAULT_SOCKET_TIMEOUT
from ._connect import connect
from ._embedded import EmbeddedServer, find_binary
from ._embedded_cluster import EmbeddedCluster

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_SOCKET_TIMEOUT",
    "EmbeddedCluster",
    "EmbeddedServer",
    "connect",
    "find_binary",
]
