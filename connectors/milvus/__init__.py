"""Milvus adapter: ``store.MilvusStore`` (server or Milvus Lite file) and ``filters.translate``."""
