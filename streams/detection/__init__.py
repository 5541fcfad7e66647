"""Drop, target and drift detection over the engine's aggregates; alert and follow-up books.

Transport-free: ``Detector.evaluate(engine, now)`` reads the engine's bucketed sums and
returns ``AlertChange`` records, which a runner publishes on ``touchstream.alerts`` (or
writes to the embedded store). ``now`` is event time (the engine watermark), so a replay
of the same events evaluated at the same watermarks gives the same alerts.

Modules, each importing only those listed before it (and ``streams.engine``, which never
imports this package):

- ``rules``: the configuration: drop, target, drift and follow-up rules, windows,
  baselines, durations, ``DetectionConfig`` and ``default_detection``.
- ``significance``: the tests of "window below baseline" (``compare``), false-discovery
  control across a drop rule's family (``screen_drops``), the drift CUSUM and its run
  length (``lower_cusum``, ``siegmund_arl``), and the ``Evidence`` an alert carries.
- ``alerts``: ``Alert``, its state changes (``AlertChange``), stable ids, and the
  ``AlertBook`` that runs the pending -> firing -> resolved lifecycle.
- ``spans``: which buckets a rule's window and baseline cover, which series it watches.
- ``attribution``: what explains a drop (a shift-share decomposition with drill-down),
  and alerts grouped under the one that explains them.
- ``followups``: single answers that need a human, ``FollowUpBook``, ``FollowUpUpdate``.
- ``detector``: ``Detector``, which evaluates the rules against an engine with all of the
  above and snapshots its books.

Callers import from this package (``from streams.detection import Detector``).
"""

from streams.detection.alerts import Alert, AlertBook, AlertChange, AlertState, alert_id, book_key
from streams.detection.attribution import (
    DOMINANT,
    AlertGroup,
    Attribution,
    Explanation,
    attribute,
    explain_drops,
    explaining_parents,
    group_alerts,
)
from streams.detection.detector import Detector, detection_state
from streams.detection.followups import (
    ERASED_FIELDS,
    FollowUp,
    FollowUpBook,
    FollowUpUpdate,
    followups,
    is_scrubbed,
    scrubbed,
)
from streams.detection.rules import (
    AlertRule,
    Baseline,
    DetectionConfig,
    DriftRule,
    DropRule,
    FollowUpRule,
    TargetRule,
    Window,
    default_detection,
    parse_duration,
)
from streams.detection.significance import (
    Comparison,
    Evidence,
    Finding,
    arcsine_z,
    compare,
    lower_cusum,
    screen_drops,
    siegmund_arl,
)

__all__ = [
    "Alert",
    "AlertBook",
    "AlertChange",
    "AlertGroup",
    "AlertRule",
    "AlertState",
    "Attribution",
    "Baseline",
    "Comparison",
    "DOMINANT",
    "DetectionConfig",
    "Detector",
    "detection_state",
    "DriftRule",
    "DropRule",
    "ERASED_FIELDS",
    "Evidence",
    "Explanation",
    "Finding",
    "FollowUp",
    "FollowUpBook",
    "FollowUpRule",
    "FollowUpUpdate",
    "TargetRule",
    "Window",
    "alert_id",
    "arcsine_z",
    "attribute",
    "book_key",
    "compare",
    "default_detection",
    "explain_drops",
    "explaining_parents",
    "followups",
    "group_alerts",
    "is_scrubbed",
    "lower_cusum",
    "parse_duration",
    "screen_drops",
    "scrubbed",
    "siegmund_arl",
]
