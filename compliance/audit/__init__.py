"""The tamper-evident audit chain: hashing, appends, checkpoints, spool, verify, export."""
