"""One settings object for the server: env ``CUNXIANG_*``, an optional TOML file, defaults.

Nested sections read from env with one underscore after the section name:
``CUNXIANG_DATABASE_URL`` -> ``database.url``, ``CUNXIANG_MQTT_PORT`` -> ``mqtt.port``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV = "CUNXIANG_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSettings(_Section):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; empty means a SQLite file `cunxiang.db` in the data directory. "
        "PostgreSQL: postgresql+psycopg://user:pass@host/db",
    )
    echo: bool = Field(default=False, description="Log every SQL statement.")


class MqttSettings(_Section):
    url: str | None = Field(
        default=None,
        description="External broker, e.g. mqtt://user:pass@127.0.0.1:1883. Empty: `cunxiang serve` "
        "starts an embedded broker on 127.0.0.1.",
    )
    host: str = Field(default="127.0.0.1", description="Address the embedded broker binds.")
    port: int = Field(default=1883, ge=1, le=65535, description="Port of the embedded broker.")
    client_id: str = Field(
        default="cunxiang-server",
        description="Client id prefix of the server: its id is PREFIX-NODE-SLOT (NODE kept in the data "
        "dir, SLOT the first free one), the same at every restart, so the broker keeps its session and "
        "queues speaker reports while it is away; `cunxiang ingest` workers use PREFIX-ingest-NODE-SLOT.",
    )
    open_broker: bool = Field(
        default=False,
        description="Demo only: the embedded broker accepts anyone, without accounts or topic ACL (anyone "
        "who reaches it can publish speaker reports). Refused on a non-loopback host unless "
        "open_broker_any_host. Default: the server account (password in DATA_DIR/mqtt-server.password) "
        "and each speaker's MQTT account, as with Mosquitto.",
    )
    open_broker_any_host: bool = Field(
        default=False,
        description="Let an open embedded broker (open_broker) listen on a non-loopback address.",
    )


class TtsSettings(_Section):
    engine: str = Field(
        default="edge",
        description="Engine used when a request names no voice: `edge` (online neural voices) or "
        "`espeak` (espeak-ng, offline).",
    )
    fallback: list[str] = Field(
        default_factory=lambda: ["espeak"],
        description="Engines tried in order when the requested one fails or is unreachable "
        "(env: JSON list, e.g. '[\"espeak\"]'; `[]` disables fallback).",
    )
    edge_voice: str = Field(default="zh-CN-XiaoxiaoNeural", description="Default edge-tts voice.")
    edge_timeout_s: float = Field(
        default=45.0,
        gt=0,
        description="Longest one edge-tts request (one piece of up to 800 characters) may take, "
        "stalls included, before it counts as failed.",
    )
    edge_retries: int = Field(
        default=2, ge=0, le=5, description="Retries of an edge-tts request answered 403, 429 or 5xx."
    )
    edge_concurrency: int = Field(
        default=4, ge=1, le=32, description="Most edge-tts connections open at once in this process."
    )
    voices_refresh_s: float = Field(
        default=24 * 3600.0,
        ge=0,
        description="How long the edge voice list fetched from the service is kept before it is "
        "fetched again.",
    )
    espeak_voice: str = Field(default="cmn", description="espeak-ng voice for Mandarin.")
    espeak_speed: int = Field(default=150, ge=80, le=450, description="espeak-ng words per minute.")
    max_chars: int = Field(default=5000, ge=1, description="Longest notice text accepted.")


class AudioSettings(_Section):
    bitrate: str = Field(default="64k", description="MP3 bitrate of produced assets.")
    sample_rate: int = Field(default=24000, description="Sample rate of produced assets (Hz).")
    loudness_lufs: float = Field(
        default=-23.0,
        ge=-40.0,
        le=-5.0,
        description="Integrated loudness (EBU R128, LUFS) speech and uploads are normalised to; "
        "-23 is the R128 broadcast target. Louder targets push speech peaks into the limiter.",
    )
    peak_db: float = Field(
        default=-1.0, ge=-12.0, le=0.0, description="Sample peak ceiling (dBFS) after normalisation."
    )
    lead_in_ms: int = Field(
        default=500,
        ge=0,
        le=10000,
        description="Silence before the first sound, so amplifiers that wake on signal are ready.",
    )
    repeat_gap_ms: int = Field(
        default=2000, ge=0, le=30000, description="Silence between repeated readings of a notice."
    )
    max_upload_mb: int = Field(default=50, ge=1, description="Largest recorded audio file accepted.")
    max_upload_s: int = Field(default=3600, ge=1, description="Longest recorded audio accepted (seconds).")


class SchedulerSettings(_Section):
    timezone: str = Field(default="Asia/Shanghai", description="IANA zone of wall-clock times.")
    lead_time_s: float = Field(
        default=5.0, ge=0, description="Seconds before start_at that play commands are published."
    )
    prefetch_s: float = Field(
        default=0.0,
        ge=0,
        le=3 * 24 * 3600,
        description="Publish scheduled airings this long before start_at (when more than lead_time_s), "
        "so speakers hold their programme and air it even if the link drops (断网续播); e.g. 86400 "
        "keeps the next day's programme on every speaker. 0: only lead_time_s. Off by default: a "
        "cancel after dispatch is a stop that speakers offline at that moment miss, and they would "
        "air the cancelled notice (docs/scheduling.md).",
    )
    report_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="Seconds after the expected end of an airing that speakers have to report "
        "before their delivery becomes no_report.",
    )
    late_start_s: float = Field(
        default=60.0,
        ge=0,
        description="A dispatch that runs more than this many seconds after start_at is not sent; "
        "the occurrence is marked missed.",
    )
    horizon_hours: float = Field(
        default=48.0,
        gt=0,
        le=24 * 31,
        description="Recurring broadcasts are expanded into occurrences this far ahead (a rolling "
        "horizon); later airings are computed from the rule when asked for.",
    )
    quiet_start: str = Field(
        default="22:00",
        pattern=r"^\d{2}:\d{2}$",
        description="Default start of quiet hours (local HH:MM); areas may set their own.",
    )
    quiet_end: str = Field(
        default="06:00",
        pattern=r"^\d{2}:\d{2}$",
        description="Default end of quiet hours (local HH:MM); equal to quiet_start means none.",
    )

    @model_validator(mode="after")
    def _prefetch_within_horizon(self) -> SchedulerSettings:
        if self.prefetch_s >= self.horizon_hours * 3600:
            raise ValueError(
                f"prefetch_s ({self.prefetch_s:g}) must be shorter than horizon_hours "
                f"({self.horizon_hours:g} h): "
                "airings are only planned that far ahead"
            )
        return self


class AuthSettings(_Section):
    secret_key: str | None = Field(
        default=None,
        description="Key signing API tokens; empty means a random key stored in the data directory.",
    )
    token_minutes: int = Field(default=12 * 60, ge=1, description="Lifetime of a bearer token.")


class DevicesSettings(_Section):
    offline_alarm_s: float = Field(
        default=600.0, gt=0, description="A speaker offline this many seconds raises an `offline` alarm."
    )
    clock_drift_alarm_s: float = Field(
        default=30.0,
        gt=0,
        description="A speaker whose clock is off by more than this many seconds raises `clock_drift`.",
    )
    failure_alarm_count: int = Field(
        default=3, ge=1, description="This many failed airings in a row raise a `failures` alarm."
    )
    monitor_interval_s: float = Field(
        default=30.0, gt=0, description="How often alarms are evaluated (seconds)."
    )
    sync_interval_s: float = Field(
        default=600.0,
        ge=0,
        description="How often a signed `sync` goes to every county topic, giving every speaker a "
        "fresh clock sample and status; 0 turns it off.",
    )
    ingest_in_server: bool = Field(
        default=True,
        description="`cunxiang serve` ingests speaker reports itself; false when separate "
        "`cunxiang ingest` workers do it.",
    )
    ingest_shared_group: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_-]{0,64}$",
        description="Share the report/status/online subscriptions as `$share/GROUP/...`, so each "
        "message goes to one of several ingest processes (Mosquitto, EMQX; not the embedded broker). "
        "Empty: every ingestor gets every message.",
    )
    tls_ca_file: str | None = Field(
        default=None,
        description="CA certificate file for an mqtts:// broker (default: the system's CAs).",
    )
    tls_cert_file: str | None = Field(
        default=None, description="Client certificate for an mqtts:// broker that requires one."
    )
    tls_key_file: str | None = Field(default=None, description="Private key of tls_cert_file.")


class HttpSettings(_Section):
    max_body_kb: int = Field(
        default=1024,
        ge=1,
        description="Largest request body (JSON, forms) accepted, in KiB; a larger one is refused "
        "with 413 before it is read.",
    )
    max_upload_mb: int | None = Field(
        default=None,
        ge=1,
        description="Largest request body on the audio upload routes, in MiB; empty means "
        "audio.max_upload_mb (plus room for the multipart envelope).",
    )
    trusted_proxies: str = Field(
        default="",
        pattern=r"^[0-9A-Fa-f.:/, *]*$",
        description="Comma-separated addresses (or networks) of reverse proxies whose "
        "X-Forwarded-Proto and X-Forwarded-For are believed; empty believes nobody. `*` believes "
        "everyone (only when nothing else can reach the server).",
    )


class Settings(BaseSettings):
    """Server settings."""

    model_config = SettingsConfigDict(
        env_prefix="CUNXIANG_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
        case_sensitive=False,
    )

    data_dir: Path = Field(default=Path("./var"), description="Holds the SQLite file and audio.")
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Base URL speakers use to download audio from this server.",
    )
    admin_password: str | None = Field(
        default=None, description="Password of the demo `admin` user; empty means random, printed once."
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="Database.")
    mqtt: MqttSettings = Field(default_factory=MqttSettings, description="MQTT broker.")
    tts: TtsSettings = Field(default_factory=TtsSettings, description="Speech synthesis.")
    audio: AudioSettings = Field(default_factory=AudioSettings, description="Audio assembly.")
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings, description="Scheduling.")
    auth: AuthSettings = Field(default_factory=AuthSettings, description="API authentication.")
    devices: DevicesSettings = Field(
        default_factory=DevicesSettings, description="Speaker fleet: alarms, monitor, broker TLS."
    )
    http: HttpSettings = Field(
        default_factory=HttpSettings, description="HTTP: request size limits, trusted proxies."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_ENV)
        if config_file:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"{CONFIG_ENV}={config_file}: no such file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @property
    def database_url(self) -> str:
        """The effective database URL."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.data_dir / 'cunxiang.db').resolve()}"

    @property
    def audio_dir(self) -> Path:
        """Where audio assets are stored, by content hash."""
        return self.data_dir / "audio"


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings (read once)."""
    return Settings()
