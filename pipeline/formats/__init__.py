"""One module per on-disk artifact, its writer and its reader together."""
