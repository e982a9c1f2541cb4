#!/usr/bin/env bash
# Every CUDA path of zsseg in one run, on the real samples (../shared/data, or $ZSSEG_TEST_DATA):
# the CUDA tests, one `segment` per method, `eval` under torchrun on NCCL, 50 steps of
# --config paper at batch 8, and a throughput benchmark; one table at the end.
#     bash benchmarks/gpu_check.sh [--out DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"
if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check.sh: needs a CUDA GPU, and torch.cuda.is_available() is False on this machine; run it where there is one" >&2
    exit 2
fi
exec "$python" benchmarks/gpu_check.py "$@"
