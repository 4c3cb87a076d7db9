"""The archive: snapshots and sealed log segments in a blob store (a folder or S3)."""
