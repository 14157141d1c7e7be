#!/usr/bin/env bash
# Every benchmark a GPU session should record, in one go (under 10 minutes on one H100 / H200).
# Each script prints JSON lines and appends them to benchmarks/results/*.jsonl:
#   tokenizer encode / decode RTF of 10 s clips at batch 1 and 32        (tokenizer_rtf)
#   paper DiT training step in bf16: MFU, peak memory, +- checkpointing   (dit_throughput)
#   10 s clip, 25 steps, CFG 5, batch 1 and 16, +- torch.compile, text encoder + DiT + decode,
#   with peak memory                                                       (generate_latency)
#
#   benchmarks/run_all.sh                                # paper sizes, cuda
#   benchmarks/run_all.sh --device cpu --preset tiny     # the same path at toy size (a test runs it)
#   benchmarks/run_all.sh ... --results DIR              # write the JSON lines under DIR
# The interpreter is $PYTHON (default: python on the PATH).
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda preset=paper results=benchmarks/results
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device=$2; shift 2 ;;
        --preset) preset=$2; shift 2 ;;
        --results) results=$2; shift 2 ;;
        *) echo "run_all.sh: unknown argument $1 (use --device, --preset, --results)" >&2; exit 2 ;;
    esac
done
# the toy size keeps the shapes small and runs each measurement once
if [ "$preset" = tiny ]; then
    rtf=(--seconds 2 --repeats 1 --warmup 0) train=(--batch 2 --frames 50 --repeats 1 --warmup 1)
    latency=(--batches 1 2 --seconds 2 --steps 4 --repeats 1)
else
    rtf=() train=() latency=()
fi

"${PYTHON:-python}" -m benchmarks.tokenizer_rtf --preset "$preset" --device "$device" --batch-sizes 1 32 "${rtf[@]}" \
    --results "$results/tokenizer_rtf.jsonl"
"${PYTHON:-python}" -m benchmarks.dit_throughput --preset "$preset" --device "$device" "${train[@]}" \
    --results "$results/dit.jsonl"
"${PYTHON:-python}" -m benchmarks.generate_latency --preset "$preset" --device "$device" "${latency[@]}" \
    --results "$results/generate_latency.jsonl"
