"""Settings: the one place that reads the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """driftpilot's settings, read from ``DRIFTPILOT_*`` variables (and ``.env``).

    ``home`` holds the embedded SQLite database, the LangGraph checkpoints and the
    artifact store unless ``database_url`` points elsewhere.
    """

    model_config = SettingsConfigDict(env_prefix="DRIFTPILOT_", env_file=".env", extra="ignore")

    home: Path = Path(".driftpilot")
    database_url: str | None = None
    #: Banking77's folder (train.csv, test.csv) when it is not ../shared/data/banking77.
    banking77_dir: Path | None = None
    openai_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "DRIFTPILOT_OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "DRIFTPILOT_OPENAI_BASE_URL")
    )
    #: The chat model asked (a local server names its own, e.g. ``qwen2.5:7b`` on Ollama).
    chat_model: str = "gpt-4o-mini"
    #: The alert labels that name the group an alarm affects, tried in order (the first one an
    #: alert carries wins): ``["olt_port"]`` for a fibre network, ``["site"]`` for a fleet of
    #: stores. A JSON list in ``DRIFTPILOT_ALARM_GROUP_LABELS``.
    alarm_group_labels: list[str] = Field(default_factory=lambda: ["group"])
    #: The policy file of models registered without one (default: the shipped policy).
    policy_file: Path | None = None
    #: The shared secret generic alarm hooks sign with (HMAC-SHA256 over timestamp and body);
    #: unset, ``POST /hooks/alarms`` refuses every request.
    hook_secret: str | None = None
    #: How old a signed hook's timestamp may be, in seconds, before it is refused as stale.
    hook_tolerance_seconds: int = 300
    #: The most events or labels one ingest request may carry.
    max_batch: int = 10_000
    #: Prometheus Alertmanager's base URL (``http://127.0.0.1:9093``): alerts for people are
    #: posted to its ``/api/v2/alerts``. Unset, none is sent there.
    alertmanager_url: str | None = None
    #: A URL that receives each alert as JSON (a chat bridge, a ticketing system). Unset, none.
    alert_webhook_url: str | None = None
    #: An MQTT broker (``mqtt://127.0.0.1:1883``) whose ``driftpilot/<model>/events`` and
    #: ``driftpilot/<model>/labels`` topics the service subscribes to. Unset, none.
    mqtt_url: str | None = None
    #: A NATS server with JetStream (``nats://127.0.0.1:4222``): the service's durable consumer
    #: reads subjects ``driftpilot.<model>.events`` and ``driftpilot.<model>.labels``. Unset, none.
    nats_url: str | None = None

    @property
    def db_url(self) -> str:
        """The database URL: ``database_url`` if set, else SQLite under ``home``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'driftpilot.sqlite'}"

    @property
    def checkpoint_path(self) -> Path:
        """The SQLite file of the LangGraph checkpointer."""
        return self.home / "checkpoints.sqlite"

    @property
    def embedding_cache_dir(self) -> Path:
        """Where sentence vectors are cached by text hash (see ``models.text_encoder``)."""
        return self.home / "cache" / "minilm"

    @property
    def artifact_dir(self) -> Path:
        """Where version artifacts (torch weights, ONNX) are stored."""
        return self.home / "artifacts"
