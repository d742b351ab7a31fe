#!/usr/bin/env bash
# The benchmarks to run when a GPU is lent: the cost of explaining every word of LLaVA 1.5 7B's reply at its
# full depth in bfloat16 (docs/speed.md, "Explaining a 7B chat model's reply"), then mmcam bench's suites and
# the folder bench on the same card. Prints the card's name first; writes everything to $OUT (default
# gpu-bench-out/). Usage: bash tasks/bench/gpu.sh
set -euo pipefail
OUT="${OUT:-gpu-bench-out}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt"
# the full 32-layer model in bfloat16 (about 14 GB of weights); peers timed on 2 words, scaled to 30
"$PYTHON" -m mmcam bench --task chat --config llava-1.5-7b --device cuda --depth full --dtype bfloat16 \
    --peer-words 2 --many 300 2>&1 | tee "$OUT/chat-llava-1.5-7b-full.txt"
"$PYTHON" -m mmcam bench --task chat --config qwen2-vl-7b --device cuda --depth full --dtype bfloat16 \
    --peer-words 2 --many 0 2>&1 | tee "$OUT/chat-qwen2-vl-7b-full.txt"
# the same reply explained at the top of the language model (the last decoder layer's input norm): the time trade-off
"$PYTHON" -m mmcam bench --task chat --config llava-1.5-7b --device cuda --depth full --dtype bfloat16 \
    --layer last --peer-words 0 --many 0 2>&1 | tee "$OUT/chat-llava-1.5-7b-full-last-layer.txt"
"$PYTHON" -m mmcam bench --task chat --config smolvlm-2b --device cuda --depth full --dtype bfloat16 \
    --peer-words 2 --many 0 2>&1 | tee "$OUT/chat-smolvlm-2b-full.txt"
# every suite, the folder bench among them (the chat suite needs --model DIR and is skipped without one)
"$PYTHON" -m mmcam bench --device cuda 2>&1 | tee "$OUT/bench-all.txt"
