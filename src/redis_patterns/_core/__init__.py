"""The pure core: each pattern's logic as sans-IO plans (no I/O, no client)."""
