"""Per-object memory state: the bounded memory bank (tracking) and the frame store (sessions)."""
