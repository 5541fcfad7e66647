"""The demo's configuration: the built-in defaults plus targets per segment and offering.

Used by ``touchstream serve --simulate`` (and so ``make run``) unless
``TOUCHSTREAM_ENGINE_CONFIG`` (or ``TOUCHSTREAM_DETECTION_CONFIG``) names a file. A
target says what a score should reach *for whom*: the simulated budget customers expect
less, enterprise and premium customers more, so the same service meets the one target
and falls short of the other. The demo alerts on targets per segment only, for CSAT and
NPS, so the page shows the enterprise segment short of its targets rather than every
channel of it. ``python -m service.demo`` prints the engine configuration as JSON,
ready for ``TOUCHSTREAM_ENGINE_CONFIG``.
"""

from __future__ import annotations

import sys

from streams.detection import DetectionConfig, default_detection
from streams.engine.config import EngineConfig, Target

DEMO_TARGETS: tuple[Target, ...] = (
    # Everyone else: a floor.
    Target(metric="csat", value=0.66),
    Target(metric="nps", value=40),
    Target(metric="ces", value=4.6),
    Target(metric="outcome", value=0.62),
    # Segments: budget customers are easier to please, enterprise customers harder,
    # and the business promises each of them more than the floor.
    Target(metric="csat", value=0.70, segment="budget"),
    Target(metric="nps", value=55, segment="budget"),
    Target(metric="csat", value=0.72, segment="standard"),
    Target(metric="csat", value=0.80, segment="enterprise"),
    Target(metric="nps", value=60, segment="enterprise"),
    # Offerings: a premium plan promises more than a basic one.
    Target(metric="csat", value=0.68, offering="basic"),
    Target(metric="csat", value=0.78, offering="premium"),
)


def demo_engine_config() -> EngineConfig:
    """The default engine configuration with :data:`DEMO_TARGETS`."""
    return EngineConfig(targets=DEMO_TARGETS)


def demo_detection(engine: EngineConfig) -> DetectionConfig:
    """The default rules, with target alerts for CSAT and NPS per segment only."""
    rules = default_detection(engine)
    targets = tuple(rule.model_copy(update={"scopes": (("segment",),)})
                    for rule in rules.targets if rule.metric in ("csat", "nps"))
    return rules.model_copy(update={"targets": targets})


if __name__ == "__main__":
    sys.stdout.write(demo_engine_config().model_dump_json(indent=2) + "\n")
