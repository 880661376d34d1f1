"""Masked-LM masking: 15% / 80-10-10 over >100k tokens, specials and padding never masked, dynamic training
masks, fixed evaluation masks, WordPiece whole words, and one-line errors for what cannot work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lightning_llm.data.masking import MaskingCollator
from lightning_llm.data.tokenizers import _train_bpe, train_tokenizer
from lightning_llm.errors import UserError
from lightning_llm.tasks.text_corpus import TextCorpusDataModule


def _corpus(tokenizer=None, **kwargs) -> TextCorpusDataModule:
    dm = TextCorpusDataModule(objective="masked_lm", cache_dir=os.environ["LIGHTNING_LLM_CACHE"], **kwargs)
    dm.tokenizer = tokenizer or train_tokenizer(dm.training_texts(), "wordpiece", 500, dm.cache_dir)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def packed() -> TextCorpusDataModule:
    return _corpus(block_size=128, batch_size=64, eval_batch_size=64)


def _originals(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])


def test_masking_statistics_over_two_epochs(packed: TextCorpusDataModule) -> None:
    tok = packed.tokenizer
    special = torch.tensor(tok.all_special_ids)
    torch.manual_seed(0)
    n = masked = as_mask = unchanged = specials_inside = 0
    for _ in range(2):  # two epochs: > 200k tokens
        for batch in packed.train_dataloader():
            is_masked, original = batch["labels"] != -100, _originals(batch)
            is_special = torch.isin(original, special)
            assert not (is_masked & is_special).any(), "a special token was masked"
            assert torch.equal(batch["input_ids"][is_special], original[is_special])
            specials_inside += is_special[:, 1:-1].sum().item()
            n += (~is_special).sum().item()
            masked += is_masked.sum().item()
            as_mask += (is_masked & (batch["input_ids"] == tok.mask_token_id)).sum().item()
            unchanged += (is_masked & (batch["input_ids"] == batch["labels"])).sum().item()
    assert n >= 100_000
    assert specials_inside > 1000  # packed blocks do carry [CLS]/[SEP] in the middle
    assert masked / n == pytest.approx(0.15, abs=0.005)
    random = masked - as_mask - unchanged
    assert as_mask / masked == pytest.approx(0.80, abs=0.01)
    assert random / masked == pytest.approx(0.10, abs=0.01)
    assert unchanged / masked == pytest.approx(0.10, abs=0.01)


def test_training_masks_are_dynamic_and_evaluation_masks_fixed(packed: TextCorpusDataModule) -> None:
    examples = [packed.datasets["train"][i] for i in range(32)]
    first, second = packed.collate_fn(examples), packed.collate_fn(examples)
    assert not torch.equal(first["labels"], second["labels"])  # a new draw in every epoch
    val = [b["labels"] for b in packed.val_dataloader()]
    again = [b["labels"] for b in packed.val_dataloader()]
    assert len(val) > 1 and len(val) == len(again) and all(torch.equal(a, b) for a, b in zip(val, again))
    assert not torch.equal(val[0] != -100, val[1] != -100)  # fixed per batch, not one pattern for all


def test_line_by_line_padding_is_never_masked(packed: TextCorpusDataModule) -> None:
    dm = _corpus(packed.tokenizer, line_by_line=True, block_size=64, batch_size=32, pad_to_multiple_of=8)
    padded = 0
    for batch in dm.train_dataloader():
        pad = batch["attention_mask"] == 0
        padded += pad.sum().item()
        assert (batch["labels"][pad] == -100).all()
        assert (batch["input_ids"][pad] == dm.tokenizer.pad_token_id).all()
        assert batch["input_ids"].shape[1] % 8 == 0
    assert padded > 0


def test_whole_word_masking_masks_every_piece_of_a_word(packed: TextCorpusDataModule) -> None:
    texts = list(packed.training_texts())
    tok = train_tokenizer(texts, "wordpiece", 150, packed.cache_dir)  # small: many words split into '##' pieces
    collator = MaskingCollator(tok, whole_word_mask=True, pad_to_multiple_of=8)
    torch.manual_seed(0)
    batch = collator([{"input_ids": ids} for ids in tok(texts[:200])["input_ids"]])
    original, is_masked = _originals(batch), batch["labels"] != -100
    pieces = torch.tensor([t.startswith("##") for t in tok.convert_ids_to_tokens(range(len(tok)))])[original]
    assert pieces.sum() > 100 and is_masked.any()
    # A '##' piece is masked exactly when the token before it (same word) is.
    assert torch.equal(is_masked[:, 1:][pieces[:, 1:]], is_masked[:, :-1][pieces[:, 1:]])
    assert (batch["input_ids"][is_masked] == tok.mask_token_id).all()  # whole words: [MASK] only


@pytest.fixture(scope="module")
def bpe_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A byte-level BPE tokenizer without a mask token, and one with `<mask>` added (RoBERTa style)."""
    root = tmp_path_factory.mktemp("bpe")
    tok = _train_bpe(["the old crow walked to the hill at night"] * 50, 300)
    tok.save_pretrained(str(root / "no_mask"))
    tok.add_special_tokens({"mask_token": "<mask>"})
    tok.save_pretrained(str(root / "with_mask"))
    return {"no_mask": root / "no_mask", "with_mask": root / "with_mask"}


@pytest.mark.parametrize("bad", ["data.mlm_probability=0", "data.mlm_probability=1.5", "no_mask", "wwm_bpe"])
def test_bad_masking_setup_is_one_line(compose_cfg, capsys, bpe_dirs, bad: str) -> None:
    from lightning_llm.runtime.cli import run_or_exit
    from lightning_llm.train import train

    overrides = {"no_mask": [f"model.tokenizer_name_or_path={bpe_dirs['no_mask']}"],
                 "wwm_bpe": [f"model.tokenizer_name_or_path={bpe_dirs['with_mask']}", "data.whole_word_mask=true"]}
    cfg = compose_cfg(["model=bert_mlm", "data=text_corpus", "logger=none", *overrides.get(bad, [bad])])
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(train, cfg)
    err = capsys.readouterr().err  # may hold progress bars of the data loading before the check
    assert exit_info.value.code == 2 and "Traceback" not in err
    expected = {"no_mask": "has no mask token", "wwm_bpe": "data.whole_word_mask=true needs a WordPiece",
                "data.mlm_probability=0": "data.mlm_probability=0.0 is out of range: must be > 0",
                "data.mlm_probability=1.5": "data.mlm_probability=1.5 is out of range: must be < 1"}
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and expected[bad] in last


@pytest.mark.slow  # a CLI start (~8 s); the same check runs in-process above
def test_bad_setup_exits_2_from_the_command_line(run_cli) -> None:
    proc = run_cli("lightning_llm.train", "model=bert_mlm", "data=text_corpus", "logger=none",
                   "data.mlm_probability=1")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: data.mlm_probability=1.0 is out of range: must be < 1"]


def test_collator_checks_hold_without_hydra(packed: TextCorpusDataModule) -> None:
    with pytest.raises(UserError, match="mlm_probability"):
        MaskingCollator(packed.tokenizer, mlm_probability=0.0)
