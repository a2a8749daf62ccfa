"""Inference engines behind small protocols and one registry; services never import a backend library."""
