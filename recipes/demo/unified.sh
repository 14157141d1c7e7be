#!/usr/bin/env bash
# One DiT for three tasks against one DiT per task, on the demo data, on a CPU machine:
#   latent cache -> the unified arm (text-to-audio + text-to-music + speech enhancement,
#   recipes/configs/unified/demo.yaml) and one single-task arm per task (the same recipe, DiT,
#   schedule and number of steps, one task each) -> benchmarks/unified_demo (text-to-audio and
#   text-to-music top-1 / FD / prompt separation, enhancement SI-SDR / PESQ / STOI / DNSMOS).
# Usage: recipes/demo/unified.sh DEMO_CORPUS SE_CORPUS CLASSIFIER [WORK_DIR]   (about 30 min per arm on 2 idle cores)
#   DEMO_CORPUS: recipes/demo/build_corpus.py's output; SE_CORPUS: recipes/demo/build_se_corpus.py's;
#   CLASSIFIER: the in-house classifier of the demo corpus. ARMS="unified ttm" trains only those arms;
#   REFERENCE=NAME=RUN adds a recipes/tta.py run on every class to the comparison.
# Every arm resumes from its newest checkpoint when rerun (a finished one only re-exports).
set -euo pipefail
cd "$(dirname "$0")/../.."
corpus="$1"; se="$2"; classifier="$3"; work="${4:-runs/unified_demo}"
tokenizer=generation/demo/pipeline/tokenizer
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
launch=(accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no)

for task in tta ttm; do
    dashflow cache-latents --manifest "$corpus/train_$task.jsonl" --tokenizer "$tokenizer" --out "$work/latents" \
        --num-workers 0
done
declare -A spec=(
    [tta]="{name: tta, train: $corpus/train_tta.jsonl, latent_cache: $work/latents, weight: 1.0}"
    [ttm]="{name: ttm, train: $corpus/train_ttm.jsonl, latent_cache: $work/latents, weight: 1.0}"
    [se]="{name: se, train: $se/train_clean.jsonl, noise: $se/train_noise.jsonl, weight: 0.5}"
)
for arm in ${ARMS:-unified tta ttm se}; do
    tasks="[${spec[tta]}, ${spec[ttm]}, ${spec[se]}]"
    [ "$arm" = unified ] || tasks="[${spec[$arm]}]"
    "${launch[@]}" recipes/unified.py --config recipes/configs/unified/demo.yaml "tasks=$tasks" \
        model.tokenizer="$tokenizer" data.text_cache="$work/text_cache" train.output_dir="$work/$arm"
done
python -m benchmarks.unified_demo --corpus "$corpus" --se-corpus "$se" --classifier "$classifier" \
    --work "$work" ${REFERENCE:+--reference "$REFERENCE"} --out benchmarks/results/unified_demo
