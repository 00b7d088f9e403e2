"""Vector-store connectors: one protocol (``protocol.VectorStore``), one adapter folder per backend.

Nothing here imports a database client; adapters import theirs lazily in ``warm_up()``.
"""
