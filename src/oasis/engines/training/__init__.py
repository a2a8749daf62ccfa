"""Fine-tuning: LoRA training of a GGUF model in a subprocess (`python -m oasis.engines.training JOB_DIR`) and the
merge of its adapter into a copy of the GGUF that llama.cpp serves. Only `gguf_merge` is importable without torch."""
