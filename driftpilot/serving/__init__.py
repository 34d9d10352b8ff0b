"""What answers a request now: routing an event to its cohort's version, the versions loaded once
per change of what is served, and manual rollback.

The API and the drivers (demo, replay, the background loop) use the same code, so a rollback made
through one is seen by the others on their next request.
"""
