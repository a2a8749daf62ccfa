"""The embedded llama.cpp engine (llama-cpp-python's low-level API): continuous batching over KV slots."""
