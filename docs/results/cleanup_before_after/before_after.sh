#!/bin/bash
# issue 16: bench_chunk and a short eval in the tree before the clean-up (1ab170d) and after (main), alternating
set -x
OUT=/work/main/runs/before_after; mkdir -p $OUT
for pass in 1 2; do
 for tree in before main; do
  d=/work/wt-$tree; [ $tree = main ] && d=/work/main
  (cd $d && PYTHONPATH=$d OMP_NUM_THREADS=1 /work/main/.venv/bin/python -m eval.bench_chunk --paths eager,fp32 --obs 8 --repeats 1 --json $OUT/bench_${tree}_$pass.json > $OUT/bench_${tree}_$pass.txt 2>&1)
 done
done
for tree in before main; do
  d=/work/wt-$tree; [ $tree = main ] && d=/work/main
  (cd $d && PYTHONPATH=$d /work/main/.venv/bin/python -m eval.run n_episodes=10 n_envs=10 'samplers=[ddpm,paraddpm]' wandb.mode=disabled progress=false plots=false hydra.run.dir=$OUT/eval_$tree > $OUT/eval_$tree.txt 2>&1)
done
