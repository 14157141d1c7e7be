#!/usr/bin/env bash
# Rebuild the bundled demo text-to-audio model (generation/demo/pipeline) from scratch on a CPU
# machine, then measure it:
#   corpus (Debian packages, MIDI, TTS) -> in-house classifier (held-out split only) ->
#   demo tokenizer (mel phase, then GAN) -> latent cache -> DiT (recipes/tta.py) -> package -> evaluate.
# Usage: recipes/demo/train.sh [WORK_DIR]   (root for apt-get; about 2 h on 2 idle cores)
# Every stage can be killed and rerun: the recipes resume from their newest complete checkpoint
# (a finished one only re-exports), the cache skips clips it holds, the corpus and the classifier
# are rebuilt only when missing (both are deterministic).
set -euo pipefail
cd "$(dirname "$0")/../.."
work="${1:-runs/demo}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
start=$SECONDS
launch=(accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no)

[ -f "$work/corpus/summary.json" ] || python recipes/demo/build_corpus.py --install --out "$work/corpus"
[ -f "$work/classifier/model.safetensors" ] || dashflow train-classifier --epochs 25 --val-fraction 0 \
    --manifest "$work/corpus/heldout.jsonl" --test-manifest "$work/corpus/train.jsonl" --out "$work/classifier"
"${launch[@]}" recipes/tokenizer_gan.py --config recipes/configs/tokenizer/demo.yaml \
    data.train="$work/corpus/train.jsonl" train.output_dir="$work/tokenizer"
dashflow cache-latents --manifest "$work/corpus/train.jsonl" --tokenizer "$work/tokenizer/final" \
    --out "$work/latents" --num-workers 0
"${launch[@]}" recipes/tta.py --config recipes/configs/tta/demo.yaml \
    data.train="$work/corpus/train.jsonl" model.tokenizer="$work/tokenizer/final" \
    data.latent_cache="$work/latents" data.text_cache="$work/text_cache" train.output_dir="$work/tta"
package=(python recipes/demo/package.py "$work/tta/final/ema" generation/demo/pipeline
         --attribution "$work/corpus/ATTRIBUTION.csv" --corpus-summary "$work/corpus/summary.json")
"${package[@]}"
python recipes/demo/evaluate.py --corpus "$work/corpus" --classifier "$work/classifier" \
    --pipeline generation/demo/pipeline --out "$work/eval"
"${package[@]}" --evaluation "$work/eval" --train-seconds $((SECONDS - start))   # the same weights, measured card
