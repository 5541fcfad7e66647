"""Hypothesis strategies for the signal part of an event (kind, value, scale), shared by
the engine's property tests. Each test adds the edge cases it is about."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

SIGNALS: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.builds(lambda v: {"kind": "csat", "value": v}, st.integers(1, 5)),
    st.builds(lambda v: {"kind": "nps", "value": v}, st.integers(0, 10)),
    st.builds(lambda v: {"kind": "ces", "value": v}, st.integers(1, 7)),
    st.builds(lambda v: {"kind": "rating", "value": v, "scale_min": 1, "scale_max": 5,
                         "na_code": 0}, st.integers(0, 5)),
    st.builds(lambda v: {"kind": "rating", "value": v, "scale_min": 0, "scale_max": 20},
              st.integers(0, 20)),
    st.builds(lambda v: {"kind": "outcome", "value": v},
              st.sampled_from(["resolved", "unresolved", "abandoned"])),
)
"""Every kind but sentiment, and ratings on a histogram scale, a wide one and with n/a."""
