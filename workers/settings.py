"""Process-wide settings: the one place where environment variables are read.

Everything a deployment changes without editing a topology (where Kafka and Redis live, where local
state goes) is here, typed, with a default. Environment variables use the prefix ``STREAMSCORE_``,
e.g. ``STREAMSCORE_KAFKA_BOOTSTRAP=broker:9092``. Topology files describe *what* a worker does;
settings describe *where* it runs.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMSCORE_", frozen=True, extra="ignore")

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers (host:port[,host:port])"
    )
    kafka_security_protocol: str = Field("PLAINTEXT", description="librdkafka security.protocol")
    kafka_sasl_mechanism: str | None = Field(None, description="librdkafka sasl.mechanism")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis holding Feast's online store"
    )
    redis_password: SecretStr | None = None

    state_dir: Path = Field(
        PROJECT_ROOT / ".streamscore",
        description="Local stack data, logs and pid files (git-ignored)",
    )
    feature_repo: Path = Field(PROJECT_ROOT / "feature_repo", description="Feast repository")
    models_dir: Path = Field(PROJECT_ROOT / "models", description="Root of model artifacts")

    kafka_controller_port: int = Field(9093, description="KRaft controller port of the local broker")
    startup_timeout_s: float = Field(60.0, description="How long `dev up` waits for services")

    # ---- what an operator sees (workers/observe) ----
    metrics_addr: str = Field("0.0.0.0", description="address of /metrics, /healthz and /readyz")
    metrics_port: int = Field(0, ge=0, le=65535, description="port of /metrics, /healthz, /readyz; 0 = off")
    log_format: Literal["json", "text"] = Field("json", description="json: one object per line")
    log_queue_max_records: int = Field(10_000, ge=1, description="log records queued; more are dropped")
    status_interval_s: float = Field(10.0, ge=0, description="a status log line this often; 0 = off")
    liveness_timeout_s: float = Field(30.0, gt=0, description="/healthz fails when the loop stalls this long")
    probe_interval_s: float = Field(5.0, gt=0, description="broker, store and lag probes this often")
    ready_when_degraded: bool = Field(False, description="/readyz stays ready while the store is down")
    latency_budget_ms: float = Field(250.0, gt=0, description="e2e p99 budget (dashboard, alerts)")
    trace_exporter: Literal["none", "otlp", "console"] = Field(
        "none", description="batch spans: otlp (OTEL_EXPORTER_OTLP_* variables), console, or none")
    audit_path: Path | None = Field(None, description="decision audit log file (JSON lines)")
    audit_topic: str | None = Field(None, description="decision audit log topic")
    audit_queue_max_batches: int = Field(64, ge=1, description="audit batches queued; more are dropped")

    def secret_values(self) -> list[str]:
        """Every secret this process knows, for masking in logs."""
        out = [s.get_secret_value() for s in (self.kafka_sasl_password, self.redis_password) if s is not None]
        pw = urlparse(self.redis_url).password
        if pw:
            out.append(pw)
        return out
    # Delivery (README "Delivery guarantees"): one stop budget, one identity per worker process.
    shutdown_grace_s: float = Field(
        20.0, gt=0, description="SIGTERM/SIGINT to exit: in-flight work, final produce and commit "
                                "get this long in all, also while the broker is unreachable")
    instance_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="stable name of this worker process (e.g. the pod name): static group "
                    "membership (group.instance.id) and, for exactly_once, the transactional.id; "
                    "unset: dynamic membership, transactional.id from the host name")
    kafka_session_timeout_ms: int = Field(
        10_000, ge=1_000, description="consumer session timeout: how soon the group gives a dead "
                                      "worker's partitions to the others (librdkafka default 45 s)")

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        first = self.kafka_bootstrap.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        return (host or "127.0.0.1", int(port or 9092))

    @property
    def redis_host_port(self) -> tuple[str, int]:
        u = urlparse(self.redis_url)
        return (u.hostname or "127.0.0.1", u.port or 6379)

    @property
    def redis_db(self) -> int:
        path = urlparse(self.redis_url).path.strip("/")
        return int(path) if path else 0

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka settings for connecting, shared by every client this process makes."""
        conf = {
            "bootstrap.servers": self.kafka_bootstrap,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            conf["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password is not None:
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        return conf


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
