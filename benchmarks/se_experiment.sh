#!/usr/bin/env bash
# The offline speech-enhancement experiment on 2 CPU cores (about 75 minutes):
#   1. a real-speech SE set from Debian packages (flite / espeak-ng voices + real noise
#      recordings; speaker- and noise-disjoint test split mixed at -5..20 dB);
#   2. the demo tokenizer fine-tuned on its training speech and noise;
#   3. Model A (latent denoiser) and Model B (flow DiT, then 2500 more steps at half the
#      learning rate from its EMA weights), CPU-sized configs;
#   4. the test split enhanced by both, in both output modes, plus the two reference rows
#      (noisy input; clean speech through the tokenizer = its ceiling);
#   5. dashflow eval (PESQ, STOI, SI-SDR, DNSMOS, SpkSim) -> WORK/report/report.{md,json,html}.
# Usage: benchmarks/se_experiment.sh [WORK_DIR]   (root for apt-get in step 1)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-runs/se_experiment}"
corpus="$work/corpus"
launch=(accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no)

[ -f "$corpus/test/manifest.jsonl" ] || python recipes/demo/build_se_corpus.py --install --out "$corpus"
cat "$corpus/train_clean.jsonl" "$corpus/train_noise.jsonl" > "$corpus/tokenizer_train.jsonl"

"${launch[@]}" recipes/tokenizer_gan.py --config recipes/configs/tokenizer/demo.yaml \
    data.train="$corpus/tokenizer_train.jsonl" model.init_from=generation/demo/pipeline/tokenizer \
    train.output_dir="$work/tokenizer" train.max_steps=3000 train.val_every=3000 \
    train.checkpoint_every=3000 optim.warmup_steps=0 optim.lr=1e-3
for kind in denoiser flow; do   # demo_denoiser: 2000 steps, demo_flow: 1500 (their configs)
    "${launch[@]}" recipes/se.py --config "recipes/configs/se/demo_$kind.yaml" \
        model.tokenizer="$work/tokenizer/final" data.train="$corpus/train_clean.jsonl" \
        data.noise="$corpus/train_noise.jsonl" train.output_dir="$work/$kind"
done
"${launch[@]}" recipes/se.py --config recipes/configs/se/demo_flow.yaml \
    model.tokenizer="$work/tokenizer/final" data.train="$corpus/train_clean.jsonl" \
    data.noise="$corpus/train_noise.jsonl" model.init_from="$work/flow/final/ema/enhancer" \
    optim.lr=5e-4 train.max_steps=2500 train.output_dir="$work/flow_stage2"

out="$work/enhanced"
for kind in denoiser flow; do
    run_dir="$work/$kind"; [ "$kind" = flow ] && run_dir="$work/flow_stage2"
    for mode in resynthesis mask; do   # a flow enhancer averages 4 samples (enhance's default)
        enhance "$corpus/test/noisy" -o "$out/${kind}_$mode" --checkpoint "$run_dir/final/ema" \
            --mode "$mode" --device cpu --quiet
    done
done
dashflow reconstruct "$corpus/test/clean" -o "$out/tokenizer_ceiling" --checkpoint "$work/tokenizer/final"
dashflow eval --generated "$corpus/test/noisy" "$out/tokenizer_ceiling" "$out"/denoiser_* "$out"/flow_* \
    --reference "$corpus/test/clean" --metrics enhancement --out "$work/report"
