"""Models a user can trust: training pairs, the quality gate, fine-tuning, promotion and optimized builds.

Every module here is light to import; torch / sentence-transformers load inside the functions that need them.
"""
