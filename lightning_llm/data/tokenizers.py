"""Tokenizers: load a pretrained one by hub id or folder, or train one on the training corpus (cached)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from filelock import FileLock
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from lightning_llm.errors import UserError, first_line
from lightning_llm.utils.io import write_dir_atomic
from lightning_llm.utils.paths import looks_local

TokenizerKind = Literal["wordpiece", "bpe", "sentencepiece"]


def load_tokenizer(name_or_path: str, key: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load with `AutoTokenizer`; a missing folder or unknown hub id becomes one line naming `key`."""
    local = looks_local(name_or_path) or Path(name_or_path).exists()
    if local and not Path(name_or_path).expanduser().exists():
        raise UserError(f"{key}: directory not found: {name_or_path}")
    try:
        return AutoTokenizer.from_pretrained(str(Path(name_or_path).expanduser()) if local else name_or_path,
                                             trust_remote_code=trust_remote_code)
    except Exception as err:
        raise UserError(f"{key}: cannot load a tokenizer from {name_or_path!r}: {first_line(err)}") from err


def train_tokenizer(texts: Iterable[str], kind: TokenizerKind, vocab_size: int,
                    cache_dir: str | Path) -> PreTrainedTokenizerBase:
    """Train a WordPiece (BERT-style), byte-level BPE (GPT-style) or SentencePiece-style BPE (T5's special
    tokens, for encoder-decoders) tokenizer, cached by corpus content."""
    texts = list(texts)
    if not any(t.strip() for t in texts):
        raise UserError("data: the training corpus is empty, cannot train a tokenizer on it")
    digest = hashlib.sha256(f"{kind}|{vocab_size}".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\x00")
    path = Path(cache_dir) / "tokenizers" / f"{kind}-{vocab_size}-{digest.hexdigest()[:16]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not (path / "tokenizer.json").exists():
            trainer = {"wordpiece": _train_wordpiece, "bpe": _train_bpe, "sentencepiece": _train_sentencepiece}[kind]
            tokenizer = trainer(texts, vocab_size)
            write_dir_atomic(path, tokenizer.save_pretrained)
    return AutoTokenizer.from_pretrained(str(path))


def _batches(texts: list[str], size: int = 1000) -> Iterator[list[str]]:
    for start in range(0, len(texts), size):
        yield texts[start:start + size]


def _train_wordpiece(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = _wordpiece_tokenizer(models.WordPiece(unk_token="[UNK]"))
    # `tokenizers` 0.23 numbers the "##c" pieces in hash-map order of the words (a new order every process) and
    # breaks ties between equally frequent merges by those numbers, so the same corpus gave a different vocabulary
    # each run (huggingface/tokenizers#1794). Declaring every "##c" up front, sorted, fixes their numbers; they
    # are then ordinary vocabulary entries of the rebuilt tokenizer, not special tokens.
    continuing = sorted(f"##{c}" for c in _non_initial_chars(tok, texts))
    tok.train_from_iterator(_batches(texts), trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=specials + continuing, show_progress=False), length=len(texts))
    tok = _wordpiece_tokenizer(models.WordPiece(vocab=tok.get_vocab(), unk_token="[UNK]"))
    tok.add_special_tokens(specials)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def _wordpiece_tokenizer(model: models.WordPiece) -> Tokenizer:
    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    return tok


def _non_initial_chars(tok: Tokenizer, texts: list[str]) -> set[str]:
    """The characters that occur inside a word (after `tok`'s normalizer and pre-tokenizer, as the trainer sees
    them): those the WordPiece trainer makes a "##c" piece for."""
    chars: set[str] = set()
    for text in texts:
        for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(text)):
            chars.update(word[1:])
    return chars


def _train_bpe(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    eos = "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(_batches(texts), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[eos], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False),
        length=len(texts))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eos, eos_token=eos, unk_token=eos, pad_token=eos,
                                   model_input_names=["input_ids", "attention_mask"])


def _train_sentencepiece(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """SentencePiece-style BPE over Metaspace pieces (`▁` marks a word start), T5's special tokens (`<pad>` 0, `</s>`
    1, `<unk>` 2) and `</s>` appended to every sequence: a shared source/target vocabulary for encoder-decoder models
    whose decoding gives the text back (no lower-casing). BPE rather than Unigram: the `tokenizers` Unigram trainer
    stopped at 178 mostly single-character pieces on the translation demo corpus (asked for 1000), BPE reaches whole
    words."""
    specials = ["<pad>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(_batches(texts), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False), length=len(texts))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_input_names=["input_ids", "attention_mask"])
