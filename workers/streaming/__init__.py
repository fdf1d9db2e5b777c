"""The streaming aggregation job (Faust): windows over events written as a Feast view in Redis."""
