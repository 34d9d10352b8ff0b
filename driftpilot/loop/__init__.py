"""The drivers: the demo (and, later, replay and the background loop)."""
