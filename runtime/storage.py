"""Each region's file storage: see levqor/storage.py (shared with compliance's evidence PDFs)."""
from levqor.storage import presigns, region_storage

__all__ = ["presigns", "region_storage"]
