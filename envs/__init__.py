"""Gymnasium environments of parapolicy. Importing `envs` registers `parapolicy/PushT-v0`.

This package never imports `parapolicy`.
"""

import gymnasium

gymnasium.register(id="parapolicy/PushT-v0", entry_point="envs.pusht:PushTEnv", max_episode_steps=300)
