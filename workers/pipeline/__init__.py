"""The path of one event, stage by stage: source -> decode -> batcher -> dispatch -> [features ->
engine] -> decide -> sink (decisions; dead letters via deadletter), with offsets committed after
the broker acknowledged every decision. ``worker`` wires the stages."""
