#!/usr/bin/env bash
# Teach the bundled demo model two sound classes it never saw (cow, sheep), on a CPU machine, and
# measure it:
#   new-class corpus (Debian packages, split by source recording) -> in-house classifier retrained
#   with the new classes (held-out sources only) -> one LoRA adapter per new class -> full
#   fine-tuning on both classes (each run replays the demo's own training clips as half of its
#   draws, so that the model keeps its old classes) -> benchmarks/finetune_demo (top-1 of new and old classes, stacking,
#   fuse / unload exactness, sizes, wall times) into benchmarks/results/finetune_demo.
# Usage: recipes/demo/finetune.sh DEMO_CORPUS [WORK_DIR]   (root for apt-get; about 40 min on 2 idle cores)
#   DEMO_CORPUS: recipes/demo/build_corpus.py's output (its held-out split trains the classifier)
# Every fine-tuning run resumes from its newest checkpoint when rerun (a finished one only re-exports).
set -euo pipefail
cd "$(dirname "$0")/../.."
corpus="$1"; work="${2:-runs/finetune_demo}"
base=generation/demo/pipeline
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
launch=(accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no)

[ -f "$work/corpus/summary.json" ] || python recipes/demo/build_corpus.py --new-classes --install --out "$work/corpus"
[ -f "$work/classifier/model.safetensors" ] || dashflow train-classifier --epochs 25 --val-fraction 0 \
    --manifest "$corpus/heldout.jsonl" "$work/corpus/heldout.jsonl" \
    --test-manifest "$corpus/train.jsonl" "$work/corpus/train.jsonl" --out "$work/classifier"
for manifest in "$work/corpus/train.jsonl" "$corpus/train.jsonl"; do
    dashflow cache-latents --manifest "$manifest" --tokenizer "$base/tokenizer" --out "$work/latents" --num-workers 0
done

# run NAME CONFIG MANIFEST [overrides...]: one fine-tuning run; the wall seconds of the run that
# trained it are kept beside it (a rerun of a finished one only re-exports and keeps them)
run() {
    local name="$1" config="$2" manifest="$3"; shift 3
    local start=$SECONDS
    "${launch[@]}" recipes/finetune.py --config "recipes/configs/finetune/$config.yaml" base="$base" \
        data.train="$manifest" data.replay="$corpus/train.jsonl" data.latent_cache="$work/latents" \
        data.text_cache="$work/text_cache" train.output_dir="$work/$name" train.max_steps=800 "$@"
    [ -f "$work/$name/wall_seconds" ] || echo $((SECONDS - start)) > "$work/$name/wall_seconds"
}
for label in cow sheep; do
    grep "\"label\": \"$label\"" "$work/corpus/train.jsonl" > "$work/corpus/train_$label.jsonl"
    run "lora_$label" lora "$work/corpus/train_$label.jsonl"
done
run full full "$work/corpus/train.jsonl"

python -m benchmarks.finetune_demo --base "$base" --corpus "$corpus" --new-corpus "$work/corpus" \
    --classifier "$work/classifier" --adapter cow="$work/lora_cow" --adapter sheep="$work/lora_sheep" \
    --full "$work/full" --out benchmarks/results/finetune_demo
