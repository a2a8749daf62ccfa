"""Text generation: chat completions and legacy completions, which share sampling, streaming and tools."""
