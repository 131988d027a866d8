"""sirst5k: SIRST-5K dataset generation for infrared small-target detection.

The folder `pipeline/` installs as this package, and `stages/` as `sirst5k.stages`:
  method/    pure batch math (no files, no cluster): targets, noise bank, transfer, negatives, ...
  formats/   one module per on-disk artifact, its writer and reader together
  runner/    the dask client, staged output folders, the per-shard task skeleton
  loader, verify, export, sources   what other repositories use (numpy, h5py, torch only)
  report/    statistics, pictures, the dataset card;   evaluate/   networks and training
The library never imports `sirst5k.stages`.
"""

__version__ = "0.2.0"
PRODUCER = f"sirst5k {__version__}"
