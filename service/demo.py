"""The demo's engine configuration: the built-in defaults plus targets per segment and offering.

Used by ``touchstream serve --simulate`` (and so ``make run``) unless
``TOUCHSTREAM_ENGINE_CONFIG`` names a file. A target says what a score should reach
*for whom*: the simulated budget customers expect less, enterprise and premium
customers more, so the same service meets the one target and falls short of the other.
``python -m service.demo`` prints it as JSON, ready for ``TOUCHSTREAM_ENGINE_CONFIG``.
"""

from __future__ import annotations

import sys

from streams.engine.config import EngineConfig, Target

DEMO_TARGETS: tuple[Target, ...] = (
    # Everyone else: what a neutral customer should get.
    Target(metric="csat", value=0.72),
    Target(metric="nps", value=50),
    Target(metric="ces", value=5.0),
    Target(metric="outcome", value=0.70),
    # Segments: budget customers are easier to please, enterprise customers harder.
    Target(metric="csat", value=0.70, segment="budget"),
    Target(metric="nps", value=55, segment="budget"),
    Target(metric="csat", value=0.75, segment="standard"),
    Target(metric="csat", value=0.80, segment="enterprise"),
    Target(metric="nps", value=60, segment="enterprise"),
    # Offerings: a premium plan promises more than a basic one.
    Target(metric="csat", value=0.68, offering="basic"),
    Target(metric="csat", value=0.78, offering="premium"),
)


def demo_engine_config() -> EngineConfig:
    """The default engine configuration with :data:`DEMO_TARGETS`."""
    return EngineConfig(targets=DEMO_TARGETS)


if __name__ == "__main__":
    sys.stdout.write(demo_engine_config().model_dump_json(indent=2) + "\n")
