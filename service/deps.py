"""Dependency aliases shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from service.auth import require
from service.settings import ApiKey, Settings
from streams.runner import Runner


def get_runner(request: Request) -> Runner:
    """The runner the app was built with."""
    runner: Runner = request.app.state.runner
    return runner


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


RunnerDep = Annotated[Runner, Depends(get_runner)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ReadKey = Annotated[ApiKey, Depends(require("read"))]
WriteKey = Annotated[ApiKey, Depends(require("write"))]
AdminKey = Annotated[ApiKey, Depends(require("admin"))]
EraseKey = Annotated[ApiKey, Depends(require("erase"))]

IdPath = Annotated[str, Path(min_length=1, max_length=128, description="An opaque id.")]
