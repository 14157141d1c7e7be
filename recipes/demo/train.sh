#!/usr/bin/env bash
# Rebuild the bundled demo model (generation/demo/pipeline) from scratch on a CPU machine:
# corpus from Debian packages -> demo tokenizer (mel + semantic losses) -> DiT -> pipeline.
# Usage: recipes/demo/train.sh [WORK_DIR]   (root for apt-get; about an hour on 2 idle cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
work="${1:-runs/demo}"
launch=(accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no)

python recipes/demo/build_corpus.py --install --out "$work/corpus"
"${launch[@]}" recipes/tokenizer.py --config recipes/configs/tokenizer/demo.yaml \
    data.train="$work/corpus/manifest.jsonl" train.output_dir="$work/tokenizer"
"${launch[@]}" recipes/tta.py --config recipes/configs/tta/demo.yaml \
    data.train="$work/corpus/manifest.jsonl" model.tokenizer="$work/tokenizer/final" \
    train.output_dir="$work/tta"
python recipes/demo/package.py "$work/tta/final/ema" generation/demo/pipeline \
    --attribution "$work/corpus/ATTRIBUTION.csv"
