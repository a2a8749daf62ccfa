"""Vector stores: stores, their files and file batches, chunking, text extraction and search."""
