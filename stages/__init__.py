"""Stage commands: each reads its options, builds dask tasks from `pipeline`, writes its outputs."""
