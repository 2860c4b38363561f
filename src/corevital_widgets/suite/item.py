"""The question record of the labelled suite: :class:`SuiteItem`, and the names of its graders
and answer forms."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: How an answer is graded (see :mod:`corevital_widgets.suite.grading`).
GRADERS: tuple[str, ...] = ("number", "text", "any", "letter", "sequence", "symbol")
#: "short": answer in a few words (``INSTRUCTION``); "free": two sentences (``FREE_INSTRUCTION``).
FORMS: tuple[str, ...] = ("short", "free")


@dataclass(frozen=True)
class SuiteItem:
    """One question with a known answer.

    ``question``: the text asked; ``answer``: the gold answer; ``kind``: the family (question type,
    one of ``FAMILIES``); ``difficulty``: a finer label inside the family ("1-digit addition",
    "large country", ...); ``accept``: other answers that also count as correct; ``grader``: how a
    reply is graded (one of ``GRADERS``); ``form``: "short" or "free" (picks the instruction);
    ``template``: the phrasing the question was written from (placeholders in braces).
    """

    question: str
    answer: str
    kind: str
    difficulty: str
    accept: tuple[str, ...] = ()
    grader: str = "text"
    form: str = "short"
    template: str = ""

    def __post_init__(self) -> None:
        if self.grader not in GRADERS:
            raise ValueError(f"grader must be one of {GRADERS}, got {self.grader!r}")
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {self.form!r}")
        if not isinstance(self.accept, tuple):
            object.__setattr__(self, "accept", tuple(self.accept))

    @property
    def answers(self) -> tuple[str, ...]:
        """The gold answer followed by the other accepted answers."""
        return (self.answer, *self.accept)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of the fields (``accept`` as a list, for JSON)."""
        d = asdict(self)
        d["accept"] = list(self.accept)
        return d
