"""Prompt building with the embedded model's real tokenizer (no engine needed)."""

import numpy as np
import pytest

from reviewkit.prompts import ENGLISH_EXAMPLES, PromptTemplate


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from reviewkit import embedded

    return AutoTokenizer.from_pretrained(str(embedded.ensure_converted(quiet=True)))


def test_label_words_are_summed_in_probability(tokenizer):
    words = {"positive": ("good", "great"), "negative": ("bad",)}
    built = PromptTemplate(examples=ENGLISH_EXAMPLES, label_words=words).build(tokenizer, 32)
    assert len(built.label_token_ids) == 3 and built.label_groups == ((0, 1), (2,))
    logprobs = np.log([[0.2, 0.3, 0.1]])
    assert np.allclose(np.exp(built.label_logprobs(logprobs)), [[0.5, 0.1]])
    text = PromptTemplate(examples=ENGLISH_EXAMPLES, label_words=words).prefix_text()
    assert "Sentiment: good" in text and "Sentiment: positive" not in text  # the first word is shown


def test_label_words_change_the_version_and_are_checked(tokenizer):
    plain = PromptTemplate(examples=ENGLISH_EXAMPLES)
    with_words = PromptTemplate(
        examples=ENGLISH_EXAMPLES, label_words={"positive": ("positive", "good"), "negative": ("negative",)}
    )
    assert plain.version != with_words.version  # the result cache keeps them apart
    with pytest.raises(ValueError, match="start with the same token"):
        PromptTemplate(examples=ENGLISH_EXAMPLES, label_words={"positive": ("good",), "negative": ("good",)}).build(
            tokenizer
        )
    with pytest.raises(ValueError, match="bare space token"):
        PromptTemplate(examples=ENGLISH_EXAMPLES, label_words={"positive": ("긍정",)}).build(tokenizer)
    with pytest.raises(ValueError, match="not in"):
        PromptTemplate(label_words={"great": ("great",)})
