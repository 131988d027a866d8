#!/usr/bin/env bash
# The GPU check, for a machine with CUDA (CI has none): the CUDA halves of the tests, whether
# CPU and CUDA workers write the same bytes, and CPU vs CUDA stage throughput.
#
#   SIRST5K_DATA=/path/to/shared/data bash benchmarks/gpu_check.sh [workers...]
#
# Uses `python3` (or $PYTHON) with the project's requirements importable; the repo root goes on
# PYTHONPATH, so an uninstalled checkout works.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
WORKERS=${*:-1 8}
status=0
nvidia-smi -L || true
$PY -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0))" || exit 1
echo "== CUDA tests"
$PY -m pytest -q -p no:cacheprovider -k "cuda or gpu" tests || status=1
echo "== CPU vs CUDA bytes of one resize + blend"
(cd benchmarks && $PY cuda_parity.py) || status=1
echo "== stage throughput, CPU vs CUDA"
(cd benchmarks && $PY stage_throughput.py --devices cpu cuda --workers $WORKERS --copies 10 --repeat 3) || status=1
exit $status
