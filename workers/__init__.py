"""streamscore: a streaming event-inference worker.

The path of one event, one module per stage:
source -> decode -> features -> batcher -> engine -> decide -> sink (dead letters via deadletter).
"""

__version__ = "0.1.0"
