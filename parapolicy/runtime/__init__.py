"""Real-robot runtime: asynchronous chunked control with latency budgets, safe by default.

    from parapolicy.runtime import Runner, RunnerConfig, run_control_loop
    runner = Runner(policy, RunnerConfig(dt=0.1, sampler=SamplerConfig(time_budget=0.08), action_low=0, action_high=512))
    runner.reset(initial_action=hold_position)
    stats = run_control_loop(my_robot, runner, duration_s=60)   # or call runner.step(obs, t) yourself
    print(runner.telemetry.summary())

See docs/runtime.md. Imports torch and numpy only (gymnasium inside `runtime.pusht` functions).
"""

from parapolicy.runtime.chunks import TimedAction, chunk_times, make_chunk, merge_chunk, pop_due
from parapolicy.runtime.clock import FakeClock, monotonic
from parapolicy.runtime.executor import InlineExecutor, SimulatedExecutor, ThreadExecutor
from parapolicy.runtime.robot import LoopStats, Robot, run_control_loop
from parapolicy.runtime.runner import ChunkPolicy, Runner, RunnerConfig
from parapolicy.runtime.telemetry import ChunkRecord, Telemetry, TickRecord, summarize

__all__ = [
    "ChunkPolicy", "ChunkRecord", "FakeClock", "InlineExecutor", "LoopStats", "Robot", "Runner",
    "RunnerConfig", "SimulatedExecutor", "Telemetry", "ThreadExecutor", "TickRecord",
    "TimedAction", "chunk_times", "make_chunk", "merge_chunk", "monotonic",
    "pop_due", "run_control_loop", "summarize",
]
