"""What is kept of an event's free-text ``comment``: the comment policy, applied where
an event is decoded (``EventDecoder(comments=...)``), so that nothing after the decoder
— a runner's log, the engine, snapshots, follow-ups, partials, checkpoints — ever holds
what the policy removes.

- ``keep``: the comment as sent, byte for byte (the default).
- ``drop``: no comment at all.
- ``redact``: the comment with every e-mail address replaced by ``[email]`` and every
  phone number by ``[phone]``; everything else unchanged, in any language and script.

What counts as a phone number errs on the side of privacy: a run of at least 7 digits,
of any script (ASCII, Persian ``۰-۹``, Arabic-Indic ``٠-٩``, ...), that may start with
``+``, ``00`` or ``(`` and be grouped by spaces, hyphens, dots, slashes or brackets —
``+354 555 1234``, ``+1 (555) 123-4567``, ``0049 30 1234567``, ``۰۹۱۲ ۳۴۵ ۶۷۸۹``,
``电话13812345678`` — unless it is written as a date (``2026-01-05``, ``05.01.2026``). A
long order number is masked too. Digits in an identifier (``cus-00042117`` stays: ``-``
joins it to ``cus``; ``abc1234567`` stays) are not. An e-mail address is
``local@domain`` with the letters of any script on both sides (``jón@dæmi.is`` is
masked).
"""

from __future__ import annotations

import re
from typing import Final, Literal

CommentPolicy = Literal["keep", "drop", "redact"]
POLICIES: Final[tuple[CommentPolicy, ...]] = ("keep", "drop", "redact")

EMAIL_MASK: Final = "[email]"
PHONE_MASK: Final = "[phone]"
MIN_PHONE_DIGITS: Final = 7

_LOCAL: Final = r"\w.!#$%&*+/=?^`{|}~-"
_EMAIL: Final = re.compile(rf"(?<![{_LOCAL}])[{_LOCAL}]++@[\w-]+(?:\.[\w-]+)*")
"""An e-mail address; tried only where a run of local-part characters starts, and that
run taken whole (possessive), so a long comment costs linear time, not quadratic."""
_SEPARATORS: Final = " \u00a0\u202f\u2009\\-\u2010\u2011\u2012\u2013./()"
_PHONE: Final = re.compile(
    rf"[+(\d](?<![A-Za-z_+@\-\d].)(?:(?<=\+)(?=[\d(])|(?<!\+))"
    rf"[\d{_SEPARATORS}]*\d\)?(?![A-Za-z_@\d])")
"""Candidates: ``+`` right before a digit or ``(``, ``(`` or a digit, then digits and
separators up to a digit (a ``+`` that ends a word, ``AÀ+ 555 1234``, is the word's), not
part of an identifier (no ASCII letter, ``_``, ``-``, ``+``, ``@`` or digit right before
it; no ASCII letter, ``_``, ``@`` or digit right after it); ``_phone`` decides. Starting
with a character class lets the engine skip to candidates (a lookbehind first would be
tried at every position). Letters of other scripts may touch it: Chinese,
Japanese or Thai write a number straight after a word (``电话13812345678``)."""
_DATE: Final = re.compile(
    r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
_DIGIT: Final = re.compile(r"\d")


def _phone(match: re.Match[str]) -> str:
    text = match.group()
    if len(_DIGIT.findall(text)) < MIN_PHONE_DIGITS or _DATE.fullmatch(text.strip("()")):
        return text
    return PHONE_MASK


def redact(text: str) -> str:
    """``text`` with e-mail addresses and phone numbers masked, the rest unchanged."""
    if "@" in text:
        text = _EMAIL.sub(EMAIL_MASK, text)
    if _DIGIT.search(text) is None:  # most comments: no digit, no phone number
        return text
    return _PHONE.sub(_phone, text)


def apply(policy: CommentPolicy, comment: str | None) -> str | None:
    """The comment as ``policy`` keeps it (``None``: no comment)."""
    if comment is None or policy == "keep":
        return comment
    if policy == "drop":
        return None
    return redact(comment)
