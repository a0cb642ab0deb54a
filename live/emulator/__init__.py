"""coinrl.live.emulator."""
