"""Rationale Difficulty (RD): what the scoring student is asked, with the answer statement cut.

MoRSD defines a rationale's difficulty as the student's ability to produce the correct answer
*under the rationale*: ``RD = -mean log p_student(answer | question, rationale)``. A teacher
rationale ends by stating its answer ("... Therefore, the answer is B.", "West is choice (D)."),
so scoring the answer given the whole rationale measures only how easily the student copies a
label off the last line: every rationale whose answer is right scores alike (0.0023 kept vs
0.0024 dropped on the demo), and one that reasons through a wrong step and then asserts the
right answer anyway (rationalised) looks as good as a sound one.

So the scorer sees the question and the rationale *with its own answer statement removed*
(``strip_answer_statement``): the trailing sentences that state the answer (the answer trigger,
"the answer is ...", "... choice (B)"). The student must get from the reasoning to the answer,
which is what MoRSD means by the rationale making the answer easy for this student: a sound
rationale's last step names the answer's value, and the student only maps it to the label; a
rationalised one's last step names another value, and the right label becomes unlikely. The
same pair is used by every scorer: the cross-fitted probe students (trained on such pairs, so
they learn to read the answer off the reasoning, not off its last line) and the pretrained
student of MoRSD's own recipe (``pipeline.methods.MoRSD.scorer``).
"""

from __future__ import annotations

import re

from scicot_jax.data import formats
from scicot_jax.data.answers import ANSWER_TRIGGER
from scicot_jax.data.examples import Example

# A sentence ends at ".", "!" or "?" followed by whitespace; the number of a numbered step
# ("... west. 3. It turns left.", a number right after a sentence's end) is no end.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?<!^\d\.)(?<!^\d\d\.)(?<![.!?]\s\d\.)(?<![.!?]\s\d\d\.)\s+")
# A sentence that states the answer: the trigger, "the answer is/:", or a choice label "(B)".
_STATES_ANSWER = re.compile(
    re.escape(ANSWER_TRIGGER) + r"|\banswer\s*(?:is|:)|\bchoice\b|\([A-Z]\)", re.IGNORECASE
)


def sentences(text: str) -> list[str]:
    """The rationale's sentences, in order (numbered steps "1. It turns left." stay whole)."""
    return [s for s in _SENTENCE_END.split(" ".join(text.split())) if s]


def strip_answer_statement(rationale: str) -> str:
    """The rationale without its trailing answer statement (the reasoning alone).

    Trailing sentences that state the answer are dropped, from the end, while one sentence of
    reasoning is left; a rationale that is nothing but an answer statement is returned as is.
    """
    parts = sentences(rationale)
    while len(parts) > 1 and _STATES_ANSWER.search(parts[-1]):
        parts.pop()
    return " ".join(parts)


def rd_pair(example: Example, rationale: str) -> tuple[str, str]:
    """The pair RD scores (and MoRSD probes train on): question + reasoning -> answer."""
    return formats.stage2(example, strip_answer_statement(rationale))
