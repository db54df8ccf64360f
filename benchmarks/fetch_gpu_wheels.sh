#!/usr/bin/env bash
# Download (here, where PyPI is reachable) the wheels the GPU image lacks, for its Python 3.12, into .whl/
# (ignored by git; carried to the device by benchmarks/gpu_run.sh's call).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl rasterio affine cligj click-plugins pyproj shapely torchgeo kornia kornia_rs \
  segmentation-models-pytorch jsonargparse docstring-parser typeshed-client lazy-loader pylandstats fast-tsp
du -sh .whl
