"""Weaviate adapter: ``filters.translate`` (filter language -> ``weaviate.classes.query.Filter``)."""
