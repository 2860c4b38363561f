"""A real transformers tokenizer built offline: byte-level, one token per UTF-8 byte (ids 3..258)
plus <pad>=0, <s>=1, </s>=2 — for random-config models where loading SmolLM2's tokenizer
would only add time (the architecture matrix, the GPU tests)."""

from __future__ import annotations

from functools import lru_cache

VOCAB_SIZE = 259


@lru_cache(maxsize=1)
def byte_tokenizer():
    """A ``PreTrainedTokenizerFast`` over bytes (vocabulary of ``VOCAB_SIZE``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    alphabet = ByteLevel.alphabet()  # the 256 printable stand-ins of the bytes
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for i, ch in enumerate(sorted(alphabet)):
        vocab[ch] = 3 + i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
