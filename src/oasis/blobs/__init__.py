"""Blob storage for file contents, images, audio and checkpoints."""

from oasis.blobs.base import BlobNotFound, BlobStore
from oasis.blobs.local import LocalBlobStore

__all__ = ["BlobNotFound", "BlobStore", "LocalBlobStore"]
