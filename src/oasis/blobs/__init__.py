"""Blob storage for file contents, images, audio and checkpoints."""

from oasis.blobs.base import BlobNotFound, BlobStore
from oasis.blobs.local import LocalBlobStore
from oasis.settings import ConfigError, Settings


def blob_store(settings: Settings) -> BlobStore:
    """The store the settings name: the data dir's folder, or an S3 bucket."""
    if settings.blobs.kind == "s3":
        try:
            from oasis.blobs.s3 import S3BlobStore  # aiobotocore is only needed by those who use S3
        except ModuleNotFoundError as exc:
            raise ConfigError(f"blobs.kind s3 needs {exc.name}: pip install 'oasis[s3]'") from None

        return S3BlobStore(settings.blobs)
    return LocalBlobStore(settings.blobs_dir)


__all__ = ["BlobNotFound", "BlobStore", "LocalBlobStore", "blob_store"]
