"""A character-level tokenizer for the synthetic tasks, saved in the Hugging Face format.

It is a ``PreTrainedTokenizerFast`` so the tiny teacher and students load, train and are
scored by lm-eval through exactly the code path a real model from the Hub uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

if TYPE_CHECKING:  # transformers is imported where a tokenizer is built: checking a suite's
    # tokenizer name (kdbench.config, the app's division check) does not need it
    from transformers import PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = list("0123456789+=,#()max \n")


def char_tokenizer() -> PreTrainedTokenizerFast:
    return _word_level(SPECIALS + CHARS, r"[\s\S]")


def _word_level(tokens: list[str], pattern: str) -> PreTrainedTokenizerFast:
    """A fast tokenizer over ``tokens`` (the specials first) that splits text at ``pattern``'s
    matches, each match one token (unknown ones ``<unk>``)."""
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


# A second vocabulary for cross-tokenizer suites: the teacher's characters plus every two-digit
# number and the word "max" as single tokens, in another id order. Same text, other boundaries:
# "12+345" is ["12", "+", "34", "5"] here and six characters for the teacher.
CHUNKS = [f"{i:02d}" for i in range(100)] + ["max"]


def chunk_tokenizer() -> PreTrainedTokenizerFast:
    """The built-in second tokenizer (``[[students]] tokenizer = "chunk"``): 126 tokens, the
    four specials, the 101 chunks of :data:`CHUNKS` and the 21 characters of the character
    tokenizer (in reverse order, so even the shared tokens have other ids). Numbers are split
    into pairs of digits from the left, so a student with it predicts roughly half as many
    tokens per number as the character-level teacher."""
    return _word_level(SPECIALS + CHUNKS + CHARS[::-1], r"max|\d\d|[\s\S]")


BUILTIN_TOKENIZERS = {"char": char_tokenizer, "chunk": chunk_tokenizer}
"""The tokenizers a built student may name (``[[students]] tokenizer``); ``char`` is the
built-in teacher's."""
