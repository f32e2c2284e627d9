"""Each region's file storage (django-storages): a local folder by default, S3 when the
region's `storage` is `s3://bucket/prefix` (credentials from the usual AWS_* variables)."""
from __future__ import annotations

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage


def region_storage(region: str) -> Storage:
    location = settings.LEVQOR_REGIONS[region].storage
    if location.startswith("s3://"):
        from storages.backends.s3 import S3Storage

        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        return S3Storage(bucket_name=bucket, location=prefix, default_acl="private", file_overwrite=False)
    return FileSystemStorage(location=location)


def presigns(storage: Storage) -> bool:
    """True for object stores that hand out their own expiring URLs."""
    return hasattr(storage, "bucket_name")
