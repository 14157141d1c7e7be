#!/usr/bin/env bash
# The wheels a lent GPU machine lacks for run_all.sh, downloaded into .whl/ (git-ignored) to carry.
# That machine's image (Python 3.12) already holds torch, transformers, accelerate, safetensors,
# huggingface-hub, tokenizers, numpy, scipy and tqdm (the device tool's KINDS.md lists them); the
# benchmarks also import diffusers, soundfile and soxr. About 5 MB, well inside the 64 MiB carry.
#
#   benchmarks/gpu_wheels.sh                  # here, once
# then one device run, with carry [".whl"] and a timeout that leaves room for a rerun:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
#       .whl/*.whl && python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site . \
#       && export PYTHONPATH=/tmp/site && PYTHON=python3 benchmarks/run_all.sh --results $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl diffusers==0.42.1 soundfile==0.14.0 soxr==1.1.0
du -sh .whl
