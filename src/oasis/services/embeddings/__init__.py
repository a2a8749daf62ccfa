"""Embeddings: inputs (strings or OpenAI token ids) in, vectors out."""
