"""coinrl.experiments."""
