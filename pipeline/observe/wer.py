"""Word error rate: word-level edit distance over the reference length, on normalized text."""

from __future__ import annotations

import re
from collections.abc import Sequence

_NOT_WORD = re.compile(r"[^a-z0-9' ]+")


def normalize(text: str) -> list[str]:
    """Lower case, punctuation dropped (apostrophes kept), split on whitespace."""
    return _NOT_WORD.sub(" ", text.lower()).split()


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Substitutions + deletions + insertions turning ``reference`` into ``hypothesis``."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(errors, reference words), so corpus WER can be summed over utterances."""
    ref = normalize(reference)
    return edit_distance(ref, normalize(hypothesis)), len(ref)


def wer(reference: str, hypothesis: str) -> float:
    errors, words = word_errors(reference, hypothesis)
    return errors / words if words else float(errors > 0)


def matched_reference_words(reference: list[str], hypothesis: list[str], prefix: bool = False) -> set[int]:
    """Indices of reference words a minimum-edit alignment pairs with an identical hypothesis word.

    With ``prefix`` the hypothesis is a transcript in progress: reference words after its end
    cost nothing, so a partial aligns with the start of the reference, not a later repeat.
    """
    return align(reference, hypothesis, prefix)[0]


def align(reference: list[str], hypothesis: list[str], prefix: bool = False) -> tuple[set[int], int]:
    """:func:`matched_reference_words`, and how many reference words the alignment covers (all, unless ``prefix``)."""
    rows, cols = len(reference) + 1, len(hypothesis) + 1
    cost = [[0] * cols for _ in range(rows)]
    for i in range(rows):
        cost[i][0] = i
    for j in range(cols):
        cost[0][j] = j
    for i in range(1, rows):
        for j in range(1, cols):
            same = reference[i - 1] == hypothesis[j - 1]
            cost[i][j] = min(cost[i - 1][j] + 1, cost[i][j - 1] + 1, cost[i - 1][j - 1] + (not same))
    i = min(range(rows), key=lambda row: (cost[row][-1], row)) if prefix else len(reference)
    covered, j = i, len(hypothesis)
    matched = set()
    while i > 0 and j > 0:
        same = reference[i - 1] == hypothesis[j - 1]
        if cost[i][j] == cost[i - 1][j - 1] + (not same):
            if same:
                matched.add(i - 1)
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return matched, covered
