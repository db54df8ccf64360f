#!/usr/bin/env bash
# One prepared run for a lent GPU (fits in 8 minutes on one H200). Run through the device tool:
#
#   device run  carry=[".whl"]  timeout_s=540
#     command="bash benchmarks/gpu_run.sh"
#
# The GPU image has torch but not the geospatial stack: fill .whl first, here, with
#   bash benchmarks/fetch_gpu_wheels.sh
# Writes under $OUT (8 files at most come back):
#   prior/config.json, prior/model.safetensors   the prior, fine-tuned in bf16 from the committed checkpoint
#   train.log, tests.log, throughput.txt, summary.txt
# Part 5 (TSP, issue 23) adds up to 4 minutes: give timeout_s=600, or skip it with GPU_TSP=0.
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT/prior"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || { echo "wheel install failed" | tee "$OUT/summary.txt"; exit 1; }
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
PY=python3
LULC=pipelines/data/chesapeake-lulc-1m/Baywide_7class_20132014_E1300000_N1770000.tif
CKPT=geo_ppp/weights/landcover-chesapeake/train_checkpoint
STEPS=${GPU_STEPS:-60000}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/summary.txt"

# 1. the prior: resume the committed checkpoint (same data, seed and settings), bf16, 4.5 minutes at most
mkdir -p /tmp/prior && cp -r "$CKPT" /tmp/prior/.train 2>/dev/null
timeout 270 $PY -m geo_ppp.cli -v train-prior --dataset landcover --labels "$LULC" --windows 4000 \
  --out /tmp/prior --steps "$STEPS" --seed 0 --device cuda --bf16 --overwrite > "$OUT/train.log" 2>&1
echo "train exit $? (124 = stopped at the time limit; the last checkpoint's prior is kept)" | tee -a "$OUT/summary.txt"
cp /tmp/prior/config.json /tmp/prior/model.safetensors "$OUT/prior/" 2>/dev/null
grep -o '"trained_steps": [0-9]*' /tmp/prior/config.json | tee -a "$OUT/summary.txt"

# 2. the gpu-marked tests
timeout 120 $PY -m pytest -q -m gpu -rs -p no:cacheprovider tests/test_gpu.py tests/test_tsp.py > "$OUT/tests.log" 2>&1
echo "gpu tests exit $?" | tee -a "$OUT/summary.txt"

# 3. batched land-cover inference throughput at the shipped settings (km2/min)
timeout 90 $PY benchmarks/landcover_speed.py --windows 64 --paper-steps 2 --prior /tmp/prior \
  > "$OUT/throughput.txt" 2>&1
echo "throughput exit $?" | tee -a "$OUT/summary.txt"

# 4. the fast path: a region segmenter's forward pass per window, batched, CPU and CUDA bf16
timeout 60 $PY benchmarks/segmenter_speed.py --batch 64 >> "$OUT/throughput.txt" 2>&1
echo "segmenter speed exit $?" | tee -a "$OUT/summary.txt"

# 5. TSP (issue 23): batched solve throughput of the committed tsp50 prior on CUDA (labels: fast-tsp, 13 s),
#    then the TSP prior's training throughput (2000 labelled instances, 300 steps at batch 128)
if [ "${GPU_TSP:-1}" = 1 ]; then
timeout 150 $PY benchmarks/tsp.py --n 50 --num 1280 --ours-num 512 --steps 32,256 --batch-size 256 \
  --device cuda --samples 64 >> "$OUT/throughput.txt" 2>&1
echo "tsp solve exit $?" | tee -a "$OUT/summary.txt"
( time timeout 100 $PY -m geo_ppp.cli train-prior --dataset tsp --nodes 50 --instances 2000 --steps 300 \
  --batch-size 128 --out /tmp/tsp_gpu --device cuda --overwrite ) >> "$OUT/throughput.txt" 2>&1
echo "tsp train exit $?" | tee -a "$OUT/summary.txt"
fi
