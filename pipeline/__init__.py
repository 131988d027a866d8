"""sirst5k: SIRST-5K dataset generation for infrared small-target detection.

`pipeline` holds the library: pure array algorithms, readers, shard I/O, the manifest,
the dask cluster helper and the torch loader. It never imports `stages`.
"""

__version__ = "0.1.0"
PRODUCER = f"sirst5k {__version__}"
