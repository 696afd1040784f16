#!/bin/bash
# issue 15 item 4b: wall-clock real-time mode through the Runner, measured latency x1 and x4, replace vs inpaint
cd /work/main
for s in 4 1; do for o in replace inpaint; do
  .venv/bin/python -m eval.run realtime=true n_envs=1 n_episodes=${NEP:-50} latency_scale=$s realtime_trigger=4 \
    realtime_overlap=$o 'samplers=[ddpm,paraddpm]' progress=false probe_calls=0 wandb.mode=disabled \
    hydra.run.dir=runs/rt_x${s}_${o} > runs/rt_x${s}_${o}.log 2>&1
  echo "done x$s $o $(date)" >> runs/rt_wall.log
done; done
