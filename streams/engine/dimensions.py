"""Dictionary codes for dimension values, with a cap on how many each dimension keeps.

Values past a dimension's cap fold into ``other`` and are counted, so a flood of new
values (a buggy producer, free text in a dimension) cannot explode the number of
series, the memory, or the Prometheus labels downstream.
"""

from __future__ import annotations

from typing import Any, Final

OTHER: Final = "other"
NONE: Final = "none"


class DimensionCodes:
    """Value ↔ code for one dimension. Code 0 is ``other``; ``none`` is an ordinary value."""

    def __init__(self, name: str, cap: int) -> None:
        self.name = name
        self.cap = cap
        self.values: list[str] = [OTHER]
        self._codes: dict[str, int] = {OTHER: 0}
        self.folded = 0

    def code(self, value: str) -> int:
        """The code of ``value``; past the cap, the code of ``other`` (and counted)."""
        found = self._codes.get(value)
        if found is not None:
            return found
        if len(self.values) - 1 >= self.cap:
            self.folded += 1
            return 0
        found = self._codes[value] = len(self.values)
        self.values.append(value)
        return found

    def codes(self, values: list[str]) -> list[int]:
        """Codes of many values: one dictionary lookup each, registering only the new."""
        get = self._codes.get
        found = [get(v, -1) for v in values]
        if -1 in found:
            found = [c if c >= 0 else self.code(v) for c, v in zip(found, values, strict=True)]
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
