#!/usr/bin/env bash
# Issue 16's GPU figures on a host with two GPUs.
#   batch_rows_2gpu.sh rows   (about 5 minutes on two H200s)
#     GPU0: where a warm batch's time goes (profile_batch.py), then the batch-1 / batch-32 rows;
#     GPU1: the steady-state row (batch 32, 384 prompts), then batch 8;
#   batch_rows_2gpu.sh ray    (about 6 minutes) the Ray row, 1 worker then 2, over RAY_PROMPTS
#     (default 768: each actor's ~15 s start and model build is inside each timed run, so a short
#     run cannot show the scaling);
#   batch_rows_2gpu.sh all    both (over the device tool's 10-minute call limit: two calls).
#   batch_rows_2gpu.sh check  the GPU tests of the kernels and the multi-GPU checks (about 2.5
#     minutes; pytest on the device), before any figure is taken from new kernel code.
# Logs go to ${OUT:-.}/batch_*.log. Waits on process ids (a `pgrep -f` loop matches its own
# command line). Each step has a time limit so that a slow one cannot take the rest with it.
set -u
what="${1:-rows}"
out="${OUT:-.}"
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-python3}"
if [ "$what" = check ]; then
    timeout 300 "$py" -m pytest -q -p no:cacheprovider "$here/../tests/test_triton_step.py" \
        "$here/../tests/test_triton_prompt.py" "$here/../tests/test_gpu_models.py" -k "not bitsandbytes" \
        > "$out/batch_check.log" 2>&1
fi
if [ "$what" = rows ] || [ "$what" = all ]; then
CUDA_VISIBLE_DEVICES=0 timeout 200 "$py" "$here/profile_batch.py" > "$out/batch_profile.log" 2>&1 &
p0=$!
CUDA_VISIBLE_DEVICES=1 timeout 240 "$py" "$here/bench_batch.py" --batch-sizes 32 --prompts 384 > "$out/batch_steady.log" 2>&1 &
p1=$!
wait "$p0"
CUDA_VISIBLE_DEVICES=0 timeout 200 "$py" "$here/bench_batch.py" --batch-sizes 1,32 --batch1-prompts 8 --prompts 256 \
    --no-warm-shapes > "$out/batch_b1_b32.log" 2>&1 &
p0=$!
wait "$p1"
CUDA_VISIBLE_DEVICES=1 timeout 150 "$py" "$here/bench_batch.py" --batch-sizes 8 --prompts 128 > "$out/batch_b8.log" 2>&1 &
p1=$!
wait "$p0" "$p1"
fi
if [ "$what" = ray ] || [ "$what" = all ]; then
    timeout "${RAY_SECONDS:-540}" "$py" "$here/bench_batch.py" --prompts "${RAY_PROMPTS:-768}" --ray-workers 1,2 \
        --ray-prompts "${RAY_PROMPTS:-768}" \
        > "$out/batch_ray.log" 2>&1
fi
for f in "$out"/batch_*.log; do echo "== $f"; tail -n 14 "$f"; done
