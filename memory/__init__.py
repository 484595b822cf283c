"""Per-object memory: the memory encoder, memory attention and the bounded memory bank."""
