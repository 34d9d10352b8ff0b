"""The loop as a LangGraph: wiring of the agents, routing, checkpointer, resuming runs."""
