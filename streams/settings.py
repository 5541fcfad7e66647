"""The settings base of every touchstream process: the API's (``service.settings``) and
the workers' (``streams.worker.settings``).

Each setting is read, first found wins, from: the arguments, the ``TOUCHSTREAM_<NAME>``
environment variable, the TOML file named by ``TOUCHSTREAM_CONFIG`` (flat keys, the
same names in lower case without the prefix: ``port = 8080``, ``topic_partitions = 12``),
then the default. The API and the workers read the same file: each takes its own keys
and leaves the other's; a key that is a setting of neither is an error naming it.

The engine and detection configurations (JSON files named by ``engine_config`` and
``detection_config``) are loaded here, once for both.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from schemas.redact import CommentPolicy
from streams.detection import DetectionConfig, default_detection
from streams.engine.config import EngineConfig

DAY_MS = 86_400_000
CONFIG_VARIABLE = "TOUCHSTREAM_CONFIG"
"""The environment variable naming the TOML file."""


class ConfigFile(TomlConfigSettingsSource):
    """The TOML file named by ``TOUCHSTREAM_CONFIG``, checked: a missing file, a file
    that is not TOML and a key that no touchstream process knows are errors (a
    ``ValueError`` naming the file, and the keys)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        if not path.is_file():
            raise ValueError(f"{CONFIG_VARIABLE}: {path} is not a file")
        try:
            super().__init__(settings_cls, toml_file=path)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{CONFIG_VARIABLE}: {path} is not valid TOML ({exc})") from exc
        unknown = sorted(set(self.toml_data) - TouchstreamSettings.file_keys())
        if unknown:
            names = ", ".join(repr(k) for k in unknown)
            raise ValueError(
                f"{CONFIG_VARIABLE}: {path}: unknown setting(s) {names}: not a setting of "
                "the API or the workers (keys are the TOUCHSTREAM_* names in lower case, "
                "without the prefix, at the top level of the file)")


class TouchstreamSettings(BaseSettings):
    """Frozen settings from arguments, ``TOUCHSTREAM_*`` variables, the shared TOML file
    and defaults, in that order; with the engine and detection configuration loaders."""

    model_config = SettingsConfigDict(env_prefix="TOUCHSTREAM_", frozen=True, extra="ignore")

    _processes: ClassVar[list[type[TouchstreamSettings]]] = []
    """Every settings class derived from this one: the keys the shared file may hold."""

    engine_config: Path | None = None
    """JSON file with the engine configuration (``EngineConfig``); defaults when unset."""
    detection_config: Path | None = None
    """JSON ``DetectionConfig`` (alert and follow-up rules); ``default_detection`` for
    the engine configuration when unset."""
    comments: CommentPolicy = "keep"
    """What is kept of an event's free-text comment, applied where events are decoded
    (``schemas.redact``): ``keep`` it as sent, ``drop`` it, or ``redact`` its e-mail
    addresses and phone numbers. The same for the API and the workers."""

    touchpoints_retention_ms: Annotated[int, Field(ge=-1)] = 7 * DAY_MS
    """How long raw events are kept (-1: no bound): the input topic's ``retention.ms``
    on Kafka; on the embedded runner the command log's, which it snapshots away (a
    snapshot holds aggregates, histories and journeys, not events) once its oldest row
    may be older."""
    dlq_retention_ms: Annotated[int, Field(ge=-1)] = 30 * DAY_MS
    """How long dead letters are kept (-1: no bound): the dead-letter topic's
    ``retention.ms``; the embedded runner's dead-letter table, checked every minute."""
    dlq_retention_bytes: Annotated[int, Field(ge=-1)] = 1 << 30
    """Most bytes the dead letters hold in all (-1: no bound); past it the oldest go
    first. Kafka bounds each partition (``retention.bytes``) and deletes whole segments:
    ``topics.dlq_size_config`` splits this among the partitions. The embedded runner
    bounds the payload bytes it keeps and counts what it deletes
    (``touchstream_dead_letters_expired_total``)."""

    erasure_key: SecretStr | None = None
    """``TOUCHSTREAM_ERASURE_KEY``: the secret of the HMAC-SHA256 digest that names an
    erased customer in the audit trail (``streams.runner.erasure_digest``). Without it
    the digest is a plain SHA-256 of the id, which anyone holding a list of ids can
    match: set it in production, and keep it (a new key gives new digests)."""

    def erasure_secret(self) -> bytes | None:
        """The erasure key's bytes, or None when unset or empty."""
        if self.erasure_key is None:
            return None
        return self.erasure_key.get_secret_value().encode("utf-8") or None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        TouchstreamSettings._processes.append(cls)

    @classmethod
    def file_keys(cls) -> frozenset[str]:
        """The keys the shared TOML file may hold: the settings of every process.

        The workers' settings are always known; the API's are once ``service.settings``
        is imported, as it is by every ``touchstream`` command (``python -m
        streams.worker`` alone knows only the workers' keys)."""
        import streams.worker.settings  # noqa: F401 - registers the workers' settings

        return frozenset(name for process in cls._processes for name in process.model_fields)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then ``TOUCHSTREAM_*`` variables, then the optional TOML file named
        by ``TOUCHSTREAM_CONFIG``; no ``.env`` or secrets directory."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_VARIABLE)
        if config_file:
            sources.append(ConfigFile(settings_cls, Path(config_file)))
        return tuple(sources)

    def load_engine_config(self) -> EngineConfig:
        """The engine configuration: the JSON file named by ``engine_config``, or defaults."""
        if self.engine_config is None:
            return EngineConfig()
        data = json.loads(self.engine_config.read_text(encoding="utf-8"))
        return EngineConfig.model_validate(data)

    def load_detection_config(self, engine: EngineConfig) -> DetectionConfig:
        """Alert and follow-up rules: the JSON file named by ``detection_config``, or
        ``default_detection`` for the engine configuration ``engine``."""
        if self.detection_config is None:
            return default_detection(engine)
        data = json.loads(self.detection_config.read_text(encoding="utf-8"))
        return DetectionConfig.model_validate(data)
