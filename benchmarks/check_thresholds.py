"""Check the sequential rule's thresholds by simulation: Gaussian per-check CUSUMs.

For each number of answers per check (one minute's answers: 1, 17 and 167 are 60,
1,000 and 10,000 answers an hour), every shift of the default grid gets the threshold
``sequential.thresholds`` gives for a run length of ``--arl`` checks; the script runs
``--chains`` CUSUMs of Gaussian per-check LLRs for ``--checks`` checks each and prints
each shift's simulated run length over the target (1: exact; above 1: conservative)
and how many single shifts the union of the grid pages as often as (the Bonferroni
factor counts all of them). See docs/alerting.md, *Checked a minute at a time*.

    python benchmarks/check_thresholds.py [--arl 20000] [--checks 5000] [--chains 4000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.detection.rules import DEFAULT_SHIFTS  # noqa: E402
from streams.detection.sequential import thresholds  # noqa: E402


def simulate(per_check: float, arl: float, checks: int, chains: int, seed: int
             ) -> tuple[np.ndarray, np.ndarray, float]:
    """(thresholds, run length / target per shift, the union's multiplicity)."""
    rng = np.random.default_rng(seed)
    shifts = np.asarray(DEFAULT_SHIFTS)
    mu = shifts * np.sqrt(per_check)
    h = thresholds(shifts, np.asarray(arl * per_check), per_check)
    single, union = np.zeros((chains, len(mu))), np.zeros((chains, len(mu)))
    alarms, any_alarms = np.zeros(len(mu)), 0
    for _ in range(checks):
        step = mu * rng.standard_normal(chains)[:, None] - mu**2 / 2
        single = np.maximum(0.0, single + step)
        union = np.maximum(0.0, union + step)
        hit = single >= h
        alarms += hit.sum(0)
        single[hit] = 0.0  # each shift's CUSUM restarts after its own alarm
        fired = (union >= h).any(1)
        any_alarms += int(fired.sum())
        union[fired] = 0.0  # the grid restarts after any alarm
    looked = chains * checks
    return h, looked / np.maximum(alarms, 1) / arl, arl * any_alarms / looked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arl", type=float, default=20_000.0, help="target, in checks")
    parser.add_argument("--checks", type=int, default=5_000)
    parser.add_argument("--chains", type=int, default=4_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"shifts (SDs of one answer): {', '.join(f'{s:g}' for s in DEFAULT_SHIFTS)}; "
          f"target run length {args.arl:,.0f} checks")
    for per_check in (1.0, 17.0, 167.0):
        h, ratio, union = simulate(per_check, args.arl, args.checks, args.chains, args.seed)
        mu = np.asarray(DEFAULT_SHIFTS) * np.sqrt(per_check)
        print(f"{per_check:>4g} answers a check: per-check shift {np.round(mu, 2)}, "
              f"h {np.round(h, 2)}")
        print(f"     run length / target {np.round(ratio, 2)}; the grid pages as "
              f"{union:.2f} shifts (Bonferroni: {len(mu)})")


if __name__ == "__main__":
    main()
