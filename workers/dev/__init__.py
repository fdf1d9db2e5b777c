"""The local stack (Kafka KRaft + Redis), the load producer and the demo."""
