"""Word error rate with one text normalisation everywhere (lower case, no punctuation, single spaces)."""

from __future__ import annotations

import jiwer

_normalise = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(), jiwer.Strip()])


def normalise(text: str) -> str:
    return _normalise(text)


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus-level WER: total word errors / total reference words."""
    refs = [normalise(r) for r in references]
    hyps = [normalise(h) or "<empty>" for h in hypotheses]
    return jiwer.wer(refs, hyps)
