#!/usr/bin/env bash
# One DiT for three tasks against one DiT per task, on the demo data, on a CPU machine:
#   latent cache -> the unified arm (text-to-audio + text-to-music + speech enhancement,
#   recipes/configs/unified/demo.yaml) and one single-task arm per task (the same recipe, DiT,
#   schedule and number of steps, one task each), and one "share" arm per task (that task alone for
#   its share of the unified arm's steps, weight / sum of weights: the three share arms together
#   train as many steps as the unified arm) -> benchmarks/unified_demo (text-to-audio and
#   text-to-music top-1 / FD / prompt separation, enhancement SI-SDR / PESQ / STOI / DNSMOS).
# Usage: recipes/demo/unified.sh DEMO_CORPUS SE_CORPUS CLASSIFIER [WORK_DIR]   (about 30 min per arm on 2 idle cores)
#   DEMO_CORPUS: recipes/demo/build_corpus.py's output; SE_CORPUS: recipes/demo/build_se_corpus.py's;
#   CLASSIFIER: the in-house classifier of the demo corpus. ARMS="unified ttm se_share" trains only those arms;
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
declare -A weight=([tta]=1.0 [ttm]=1.0 [se]=0.5)
declare -A spec=(
    [tta]="{name: tta, train: $corpus/train_tta.jsonl, latent_cache: $work/latents, weight: ${weight[tta]}}"
    [ttm]="{name: ttm, train: $corpus/train_ttm.jsonl, latent_cache: $work/latents, weight: ${weight[ttm]}}"
    [se]="{name: se, train: $se/train_clean.jsonl, noise: $se/train_noise.jsonl, weight: ${weight[se]}}"
)
steps=$(python -c "import yaml; print(yaml.safe_load(open('recipes/configs/unified/demo.yaml'))['train']['max_steps'])")
for arm in ${ARMS:-unified tta ttm se tta_share ttm_share se_share}; do
    task="${arm%_share}"; overrides=()
    if [ "$arm" = unified ]; then
        tasks="[${spec[tta]}, ${spec[ttm]}, ${spec[se]}]"
    else
        tasks="[${spec[$task]}]"
    fi
    [ "$arm" = "$task" ] || overrides=(train.max_steps=$(python -c \
        "print(round($steps * ${weight[$task]} / (${weight[tta]} + ${weight[ttm]} + ${weight[se]})))"))
    "${launch[@]}" recipes/unified.py --config recipes/configs/unified/demo.yaml "tasks=$tasks" \
        model.tokenizer="$tokenizer" data.text_cache="$work/text_cache" train.output_dir="$work/$arm" \
        "${overrides[@]}"
done
python -m benchmarks.unified_demo --corpus "$corpus" --se-corpus "$se" --classifier "$classifier" \
    --work "$work" ${REFERENCE:+--reference "$REFERENCE"} --out benchmarks/results/unified_demo
