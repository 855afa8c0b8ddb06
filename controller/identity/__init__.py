"""Per-instance agent identity: signed instance identity documents in, credentials out."""
