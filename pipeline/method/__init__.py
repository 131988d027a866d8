"""Pure batch math of the method: no files, no cluster. Tested alone; the same on CPU and GPU."""
