"""driftpilot: agents that keep deployed machine-learning models healthy.

Importing the package does no work: every part is imported where it is used.
"""

__version__ = "0.1.0"
