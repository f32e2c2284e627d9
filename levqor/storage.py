"""Each region's file storage (django-storages): a local folder by default, S3 when the
region's `storage` is `s3://bucket/prefix` (credentials from the usual AWS_* variables,
endpoint from the region's `storage_endpoint_url` when it is not AWS).

It lives in `levqor` rather than in an app because backups (runtime) and evidence PDFs
(compliance) both store files in the tenant's region, and neither app imports the other.
"""
from __future__ import annotations

import mimetypes
from functools import cache

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage


def region_storage(region: str) -> Storage:
    config = settings.LEVQOR_REGIONS[region]
    location = config.storage
    if location.startswith("s3://"):
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        extra = {"endpoint_url": config.storage_endpoint_url} if config.storage_endpoint_url else {}
        # SigV4: presigned export links carry their lifetime (X-Amz-Expires) in the signature,
        # and every AWS region (and S3-compatible servers) accepts it; SigV2 is deprecated.
        return _s3_storage_class()(bucket_name=bucket, location=prefix, default_acl="private",
                                   file_overwrite=False, signature_version="s3v4", **extra)
    return FileSystemStorage(location=location)


def presigns(storage: Storage) -> bool:
    """True for object stores that hand out their own expiring URLs."""
    return hasattr(storage, "bucket_name")


@cache
def _s3_storage_class():
    """S3Storage that stores bytes as they are (imported on first use: boto3 is slow to load).

    django-storages tags a `.tar.gz` upload `Content-Encoding: gzip`, so HTTP clients
    unpack a backup while downloading it and what the user saves no longer matches its
    checksum. Here a compressed file is stored as an opaque object instead.
    """
    from storages.backends.s3 import S3Storage

    class RegionS3Storage(S3Storage):
        def get_object_parameters(self, name):
            params = super().get_object_parameters(name)
            kind, encoding = mimetypes.guess_type(name)
            params.setdefault("ContentType", "application/octet-stream" if encoding or not kind else kind)
            return params

    return RegionS3Storage
