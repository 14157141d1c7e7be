#!/usr/bin/env bash
# LoSATok at demo scale, and the claim it rests on (is a 10x smaller latent easier for the DiT?),
# on a CPU machine, with the suite's own recipes:
#   semantic teacher (supervised on the demo corpus's train split) -> SemBo, with and without the
#   time-relation loss -> demo LoSATok (GAN) -> codec benchmark rows (reconstruction + probes)
#   -> DiT arms on (a) the demo tokenizer's latents and (b) demo LoSATok latents, same DiT, steps, data.
# Usage: recipes/demo/losatok.sh CORPUS_DIR PROBE_TASKS_DIR CLASSIFIER [WORK_DIR]
#   CORPUS_DIR: recipes/demo/build_corpus.py's output; PROBE_TASKS_DIR: recipes/probe_tasks/build.py's;
#   CLASSIFIER: the in-house classifier of that corpus (recipes/demo/train.sh trains one).
# Every stage resumes from its newest checkpoint when rerun (a finished one only re-exports).
set -euo pipefail
cd "$(dirname "$0")/../.."
corpus="$1"; tasks="$2"; classifier="$3"; work="${4:-runs/losatok_demo}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
launch=(accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no)

"${launch[@]}" recipes/semantic_teacher.py --config recipes/configs/semantic_teacher/demo.yaml \
    data.train="$corpus/train.jsonl" train.output_dir="$work/teacher"
for variant in relation:1.0 no_relation:0.0; do
    "${launch[@]}" recipes/sembo.py --config recipes/configs/sembo/demo.yaml data.train="$corpus/train.jsonl" \
        model.teacher="$work/teacher/final" loss.relation_weight="${variant#*:}" \
        train.output_dir="$work/sembo_${variant%%:*}"
done
"${launch[@]}" recipes/tokenizer_gan.py --config recipes/configs/tokenizer/losatok_demo.yaml \
    data.train="$corpus/train.jsonl" model.teacher="$work/teacher/final" \
    model.sembo="$work/sembo_relation/final" train.output_dir="$work/losatok"
python -m benchmarks.losatok_demo --tasks "$tasks" --work "$work" --out benchmarks/results/losatok_demo
# DiT arms: the demo DiT (recipes/configs/tta/demo.yaml) on each codec's latents, 1600 steps, every
# 400th step's checkpoint kept for the training curve; arm fc is the paper's FC baseline: the demo
# tokenizer's latents through a fixed 128 -> 16 PCA projection (LoSATok's width)
dashflow cache-latents --manifest "$corpus/train.jsonl" --tokenizer generation/demo/pipeline/tokenizer \
    --out "$work/dit/latents" --num-workers 0
python -m benchmarks.fit_projection --tokenizer generation/demo/pipeline/tokenizer --latents "$work/dit/latents" \
    --dim 16 --out "$work/fc16"
for arm in demo:generation/demo/pipeline/tokenizer losatok:$work/losatok/final fc:$work/fc16; do
    name="${arm%%:*}"; codec="${arm#*:}"
    dashflow cache-latents --manifest "$corpus/train.jsonl" --tokenizer "$codec" --out "$work/dit/latents" \
        --num-workers 0
    "${launch[@]}" recipes/tta.py --config recipes/configs/tta/demo.yaml data.train="$corpus/train.jsonl" \
        model.tokenizer="$codec" data.latent_cache="$work/dit/latents" data.text_cache="$work/dit/text_cache" \
        train.output_dir="$work/dit/$name" train.max_steps=1600 train.checkpoint_every=400 train.keep_checkpoints=0
done
python -m benchmarks.losatok_dit --corpus "$corpus" --classifier "$classifier" --arm demo="$work/dit/demo" \
    --arm losatok="$work/dit/losatok" --arm fc="$work/dit/fc" --out benchmarks/results/losatok_demo
