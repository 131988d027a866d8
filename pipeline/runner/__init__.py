"""Where stage work runs: the dask client, staged output folders and locks, the task skeletons."""
