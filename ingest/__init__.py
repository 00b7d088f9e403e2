"""Ingestion: read documents, chunk them by the embedding model's tokens, embed, upsert with their ACL."""
