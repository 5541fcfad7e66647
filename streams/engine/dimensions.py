"""Dictionary codes for dimension values, with a cap on how many each dimension keeps.

Values past a dimension's cap fold into ``other`` and are counted, so a flood of new
values (a buggy producer, free text in a dimension) cannot explode the number of
series, the memory, or the Prometheus labels downstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any, Final

import numpy as np
import numpy.typing as npt

OTHER: Final = "other"
NONE: Final = "none"


class DimensionCodes:
    """Value ↔ code for one dimension. Code 0 is ``other``; ``none`` is an ordinary value."""

    def __init__(self, name: str, cap: int) -> None:
        self.name = name
        self.cap = cap
        self.values: list[str] = [OTHER]
        self._codes: dict[str, int] = {OTHER: 0}
        # The codes by raw event field value: None stands for ``none`` once it has a code.
        self._raw: dict[str | None, int] = {OTHER: 0}
        self.folded = 0

    def code(self, value: str) -> int:
        """The code of ``value``; past the cap, the code of ``other`` (and counted)."""
        found = self._codes.get(value)
        if found is not None:
            return found
        if len(self.values) - 1 >= self.cap:
            self.folded += 1
            return 0
        found = self._codes[value] = self._raw[value] = len(self.values)
        self.values.append(value)
        if value == NONE:
            self._raw[None] = found
        return found

    def codes(self, values: list[str]) -> list[int]:
        """Codes of many values: one dictionary lookup each, registering only the new."""
        get = self._codes.get
        found = [get(v, -1) for v in values]
        if -1 in found:
            found = [c if c >= 0 else self.code(v) for c, v in zip(found, values, strict=True)]
        return found

    def encode(self, values: Sequence[str | None]) -> npt.NDArray[np.int64]:
        """Codes of raw event field values (None means ``none``), as ``code`` on each.

        Known values cost one dictionary lookup each; new values register in order of
        appearance and values past the cap are folded (and counted) every time.
        """
        try:
            return np.fromiter(map(self._raw.__getitem__, values), dtype=np.int64,
                               count=len(values))
        except KeyError:
            pass  # a new value, or one past the cap
        found = np.fromiter(map(self._raw.get, values, repeat(-1)), dtype=np.int64,
                            count=len(values))
        if (found < 0).any():
            for i in np.flatnonzero(found < 0).tolist():
                value = values[i]
                found[i] = self.code(NONE if value is None else value)
        return found

    def known(self, value: str) -> int | None:
        """The code of a value already seen, without registering it."""
        return self._codes.get(value)

    @property
    def radix(self) -> int:
        """Largest possible code plus one: used to pack several codes into one integer."""
        return self.cap + 1

    def state(self) -> dict[str, Any]:
        """Snapshot."""
        return {"values": self.values[1:], "folded": self.folded}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore a snapshot taken by ``state``."""
        for value in state["values"]:
            self.code(value)
        self.folded = int(state["folded"])
