"""Embedding models: one protocol (``protocol.Embedder``) used by ingestion and by queries."""
