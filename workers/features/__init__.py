"""Online features for a micro-batch in one round trip: the reader interface (``base``), Feast's SDK
reader (``feast_sdk``) and the direct reader of Feast's Redis layout (``redis_fast``, with
``layout``, ``wire`` and the C helper ``_resp``)."""
