"""shadow-burnin: is the new LLM inference server safe to put in front of users?

Fire every prompt at v1 (production) and v2 (candidate) at temperature 0, diff the
replies byte for byte, log every round, and gate the cutover on the evidence.
"""

__version__ = "0.1.0"
