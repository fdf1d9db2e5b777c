"""The systems ``streamscore bench e2e`` compares, each a process of its own.

Every peer is started as ``python -m workers.bench.peers.<name> --topology F --input T --output O
--dead-letter D --group G --stats PATH``, runs until SIGTERM, and writes what it counted to
``--stats`` (JSON) when it stops. ``passthrough`` moves bytes; ``streamscore`` is the worker;
``faust`` and ``quix`` do the worker's job the way each framework's documentation shows a user
(``job.ScoringJob`` is streamscore's stages called as a library, which is how they use it).
"""
