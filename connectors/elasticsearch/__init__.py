"""Elasticsearch adapter: ``filters.translate`` (filter language -> a ``bool`` query dict)."""
