"""vmconform: the registry of implementations, the check runner, the CLI and the pytest plugin.

This is the top layer: it composes the state machines (``stateful_tests``) with the
implementations it finds by name, runs them, and reports per check ID.
"""

__version__ = "0.1.0"
