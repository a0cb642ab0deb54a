"""coinrl.live."""
