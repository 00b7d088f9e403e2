"""The query pipeline: CJK analyzer, dense + keyword retrieval, fusion, reranking, access control."""
