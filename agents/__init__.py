"""coinrl.agents."""
