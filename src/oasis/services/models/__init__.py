"""The model list and the lookup from a model name to its loaded engine."""
