"""Recordings from the spool to S3: multipart, checksummed, verified, resumable."""
