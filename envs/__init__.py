"""coinrl.envs."""
