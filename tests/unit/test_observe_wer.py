"""Word error rate and the alignment behind word-emission latency."""

from pipeline.observe.wer import matched_reference_words, normalize, wer, word_errors


def test_wer_counts_substitutions_deletions_insertions_on_normalized_words() -> None:
    assert normalize("Two Large Fries, please!") == ["two", "large", "fries", "please"]
    assert wer("two large fries please", "Two large fries, please.") == 0.0
    assert word_errors("a b c d", "a x c") == (2, 4)
    assert word_errors("a b", "a b c d") == (2, 2)
    assert wer("", "") == 0.0 and wer("", "noise") == 1.0


def test_alignment_names_the_reference_words_transcribed_correctly() -> None:
    assert matched_reference_words(["a", "b", "c", "d"], ["a", "x", "c", "d", "e"]) == {0, 2, 3}
    assert matched_reference_words(["a", "b"], []) == set()


def test_a_partial_aligns_with_the_start_of_a_repeated_reference() -> None:
    reference = ["two", "large", "fries", "two", "large", "fries"]
    assert matched_reference_words(reference, ["two"], prefix=True) == {0}
    assert matched_reference_words(reference, ["two", "large", "fries", "two"], prefix=True) == {0, 1, 2, 3}
