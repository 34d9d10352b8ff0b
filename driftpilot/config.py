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
