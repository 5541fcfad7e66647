"""Service settings: one frozen object, read from ``TOUCHSTREAM_*`` environment variables
and the TOML file named by ``TOUCHSTREAM_CONFIG`` (``streams.settings``, shared with the
workers).

Secrets (API keys) are ``SecretStr`` and are hashed as soon as they are parsed; outside
``development`` a placeholder key refuses to start the service.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from streams.settings import TouchstreamSettings

Scope = Literal["read", "write", "admin", "erase"]
SCOPES: tuple[Scope, ...] = ("read", "write", "admin", "erase")
"""``erase``: erasing a customer's data (``DELETE /v1/customers/{id}``); no other scope
implies it, so only the keys of those who may erase hold it."""
_PLACEHOLDERS = {"changeme", "secret", "password", "dev", "test", "example", "placeholder"}


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A caller: a name, the SHA-256 of its key, and its scopes. The key itself is not kept."""

    name: str
    digest: bytes
    scopes: frozenset[str]


def parse_api_keys(spec: str) -> tuple[ApiKey, ...]:
    """Parse ``name:scope+scope:key`` entries separated by commas.

    The key part may be ``sha256:<hex>`` to give the digest instead of the key, so that
    deployments need not hold plaintext keys at all.
    """
    keys: list[ApiKey] = []
    for entry in filter(None, (e.strip() for e in spec.replace("\n", ",").split(","))):
        parts = entry.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(
                f"API key entry {parts[0]!r} must look like name:read+write:key"
            )
        name, scopes_text, secret = parts
        scopes = frozenset(scopes_text.split("+"))
        unknown = scopes - set(SCOPES)
        if unknown:
            raise ValueError(f"API key {name!r}: unknown scope(s) {sorted(unknown)}")
        if secret.startswith("sha256:"):
            digest = bytes.fromhex(secret.removeprefix("sha256:"))
            if len(digest) != 32:
                raise ValueError(f"API key {name!r}: a sha256 digest has 64 hex digits")
        else:
            digest = hashlib.sha256(secret.encode()).digest()
        keys.append(ApiKey(name, digest, scopes))
    names = [k.name for k in keys]
    if len(set(names)) != len(names):
        raise ValueError("API key names must be unique")
    return tuple(keys)


def _has_placeholder(spec: str) -> bool:
    for entry in spec.replace("\n", ",").split(","):
        secret = entry.strip().split(":", 2)[-1]
        if secret.lower() in _PLACEHOLDERS or (secret and len(secret) < 16
                                               and not secret.startswith("sha256:")):
            return True
    return False


class Settings(TouchstreamSettings):
    """Everything the service reads from its environment and the shared TOML file
    (``engine_config``, ``detection_config`` and their loaders come from the base)."""

    environment: Literal["development", "production"] = "development"
    runner: Literal["embedded", "kafka"] = "embedded"
    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8080
    api_keys: SecretStr = SecretStr("")
    api_keys_file: Path | None = None
    """A file with the same entries as ``api_keys`` (commas or new lines between them),
    re-read when it changes: keys rotate without a restart. It takes over from
    ``api_keys``."""
    rate_limit: Annotated[float, Field(ge=0)] = 100.0
    """Requests a second each API key may make on average (0: no limit)."""
    rate_burst: Annotated[int, Field(ge=1)] = 400
    """Requests a key may make at once before ``rate_limit`` applies."""
    public_metrics: bool = True
    max_body_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    max_batch: Annotated[int, Field(ge=1, le=100_000)] = 10_000
    max_page: Annotated[int, Field(ge=1, le=10_000)] = 1000
    metrics_windows: tuple[str, ...] = ("continuous:15m", "continuous:1h", "continuous:24h",
                                        "periodic:day")
    metrics_refresh_seconds: Annotated[float, Field(gt=0)] = 5.0
    kafka_bootstrap: str = "127.0.0.1:9092"
    snapshot_every: Annotated[int, Field(ge=1)] = 50_000
    dead_letter_max_bytes: Annotated[int, Field(ge=0, le=64 * 1024 * 1024)] = 64 * 1024
    """Most payload bytes the embedded runner keeps of a dead letter (with the size and
    SHA-256 of all of it); the Kafka runner reads it from the worker settings."""

    @field_validator("metrics_windows", mode="before")
    @classmethod
    def _split_windows(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @model_validator(mode="after")
    def _safe_keys(self) -> Settings:
        spec = self._key_spec()
        parse_api_keys(spec)
        if self.environment != "development" and (not spec or _has_placeholder(spec)):
            raise ValueError(
                "TOUCHSTREAM_API_KEYS: set real keys (16+ characters, or sha256:<digest>) "
                "outside development"
            )
        return self

    def _key_spec(self) -> str:
        if self.api_keys_file is None:
            return self.api_keys.get_secret_value()
        try:
            return self.api_keys_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"TOUCHSTREAM_API_KEYS_FILE: cannot read {self.api_keys_file}"
                             f" ({exc})") from exc

    def keys(self) -> tuple[ApiKey, ...]:
        """The configured API keys, hashed."""
        return parse_api_keys(self._key_spec())

