"""The agents of the loop: each module holds one node function of the LangGraph."""
