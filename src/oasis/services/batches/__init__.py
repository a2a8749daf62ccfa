"""The Batch API: batch objects and their lifecycle (workers/batches.py runs them)."""
