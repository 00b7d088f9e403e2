"""Qdrant adapter: ``filters.translate`` (filter language -> ``qdrant_client.models.Filter``)."""
