"""Before a command starts work: are the broker and the store there? One clear message if not.

librdkafka retries an absent broker forever and logs every attempt (hundreds of lines a minute to
stderr); a command that needs the broker asks once, with a bounded wait and its own client logs
silenced, and stops with a sentence that says what to do (``ServiceUnreachable``: a user error,
exit code 2, no traceback). ``quiet_logger`` is the logger such short-lived clients get.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from workers.settings import Settings


class ServiceUnreachable(RuntimeError):
    """The broker or the store did not answer; the message says where and what to do."""


def quiet_logger() -> logging.Logger:
    """A logger that drops librdkafka's connection chatter (the caller reports the outcome)."""
    lg = logging.getLogger("workers.librdkafka.quiet")
    lg.propagate = False
    lg.setLevel(logging.CRITICAL)
    return lg


def check_kafka(settings: Settings, timeout_s: float = 10.0) -> None:
    conf: dict[str, Any] = {**settings.kafka_client_config(), "logger": quiet_logger()}
    admin = AdminClient(conf)
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise ServiceUnreachable(
            f"Kafka broker at {settings.kafka_bootstrap} did not answer within {timeout_s:g} s "
            f"({_reason(exc)}) — is `streamscore dev up` running, or STREAMSCORE_KAFKA_BOOTSTRAP set "
            "to where the broker is?") from None


def check_redis(settings: Settings, timeout_s: float = 5.0) -> None:
    import redis

    host, port = settings.redis_host_port
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    client = redis.Redis.from_url(settings.redis_url, password=password, socket_timeout=timeout_s,
                                  socket_connect_timeout=timeout_s)
    try:
        client.ping()
    except redis.exceptions.AuthenticationError:
        raise ServiceUnreachable(
            f"Redis at {host}:{port} refused the password — check STREAMSCORE_REDIS_URL / "
            "STREAMSCORE_REDIS_PASSWORD") from None
    except redis.exceptions.RedisError as exc:
        raise ServiceUnreachable(
            f"Redis at {host}:{port} did not answer within {timeout_s:g} s ({type(exc).__name__}) — "
            "is `streamscore dev up` running, or STREAMSCORE_REDIS_URL set to where Redis is?") from None
    finally:
        client.close()


def _reason(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    return str(err.str()) if err is not None and hasattr(err, "str") else str(exc)
