"""What an operator sees of a running worker: metrics, traces, logs, health, audit and lag.

One module per job. Nothing here waits on the hot path: metrics are updated once per batch,
traces and logs are exported by background threads through bounded queues, lag is read by a
background thread. The pipeline stages call these modules; these modules import no stage.
"""
