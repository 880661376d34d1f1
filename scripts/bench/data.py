"""B3 (data preparation: ours vs direct fast-tokenizer calls; cold vs cached) and B4 (padding waste)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from lightning_llm.callbacks.throughput import count_tokens
from lightning_llm.data.sources import BUNDLED_DIR
from lightning_llm.data.tokenizers import train_tokenizer
from lightning_llm.tasks.classification import SequenceClassificationModule, TextClassificationDataModule
from lightning_llm.tasks.text_corpus import TextCorpusDataModule
from scripts.bench.harness import (
    Alternation,
    Result,
    alternate_calls,
    median_ratio,
    parity_text,
    workdir,
)
from scripts.bench.training import Sizes, plain_loop, same_order_sampler

_SPLITS = {"train": "corpus_train.txt", "validation": "corpus_validation.txt", "test": "corpus_test.txt"}
_MAP_BATCH = 1000  # documents per packing batch, as TextCorpusDataModule's map (the remainder of each is dropped)


def _bundled_lines(name: str) -> list[str]:
    return (BUNDLED_DIR / name).read_text().splitlines()


def _write_corpus(root: Path, copies: int) -> dict[str, str]:
    """The bundled corpus, its training split repeated `copies` times (a few MB: tokenizing dominates)."""
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, name in _SPLITS.items():
        text = (BUNDLED_DIR / name).read_text()
        files[split] = str(root / name)
        Path(files[split]).write_text(text * (copies if split == "train" else 1))
    return files


def direct_pack(files: dict[str, str], tokenizer: Any, block: int) -> dict[str, np.ndarray]:
    """The baseline: read lines, batched fast-tokenizer calls, EOS between documents, numpy reshape into blocks
    (per 1000-line batch, the same grouping as ours so the outputs can be compared exactly)."""
    eos = tokenizer.eos_token_id
    out = {}
    for split, path in files.items():
        lines = Path(path).read_text().splitlines()
        blocks = []
        for start in range(0, len(lines), _MAP_BATCH):
            texts = [t for t in lines[start:start + _MAP_BATCH] if t.strip()]
            ids = tokenizer(texts, return_attention_mask=False)["input_ids"]
            flat = np.concatenate([np.asarray(x + [eos] if not x or x[-1] != eos else x, dtype=np.int64)
                                   for x in ids])
            usable = len(flat) // block * block
            blocks.append(flat[:usable].reshape(-1, block))
        out[split] = np.concatenate(blocks)
    return out


def _corpus_module(tokenizer: Any, files: dict[str, str], cache_dir: Path, block: int,
                   objective: str = "causal_lm", **kwargs: Any) -> TextCorpusDataModule:
    return TextCorpusDataModule(tokenizer=tokenizer, objective=objective, train_file=files.get("train"),
                                validation_file=files.get("validation"), test_file=files.get("test"),
                                block_size=block, cache_dir=str(cache_dir), **kwargs)


def _prepared(dm: TextCorpusDataModule) -> TextCorpusDataModule:
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _blocks(dm: TextCorpusDataModule) -> dict[str, np.ndarray]:
    return {s: np.asarray(d.with_format("numpy")[:]["input_ids"]) for s, d in dm.datasets.items()}


def b3(smoke: bool = False, rounds: int | None = None) -> list[Result]:
    root = workdir("b3")
    block = 128
    tokenizer = train_tokenizer(_bundled_lines(_SPLITS["train"]), "bpe", 300 if smoke else 1000, root / "tok")
    files = _write_corpus(root / "corpus", 1 if smoke else 8)
    counter = iter(range(10**6))

    def ours_cold() -> TextCorpusDataModule:
        return _prepared(_corpus_module(tokenizer, files, root / f"cache-{next(counter)}", block))

    warm_cache = root / "cache-warm"
    _prepared(_corpus_module(tokenizer, files, warm_cache, block))  # fills the cache the warm side reads

    def ours_warm() -> TextCorpusDataModule:
        return _prepared(_corpus_module(tokenizer, files, warm_cache, block))

    times, outs = alternate_calls([ours_cold, lambda: direct_pack(files, tokenizer, block), ours_warm],
                                  rounds=rounds or (1 if smoke else 3), warmup=0 if smoke else 1)
    ours_cold_blocks, direct, ours_warm_blocks = _blocks(outs[0]), outs[1], _blocks(outs[2])
    same = all(np.array_equal(ours_cold_blocks[s], direct[s]) and np.array_equal(ours_warm_blocks[s], direct[s])
               for s in files)
    parity = "ok (identical blocks)" if same else "MISMATCH (blocks differ)"
    n_tokens = sum(a.size for a in direct.values())
    mb = sum(Path(p).stat().st_size for p in files.values()) / 2**20
    cold, direct_time, warm = (float(np.median(t)) for t in times)
    notes = [f"round times (s): ours-cold {' '.join(f'{t:.2f}' for t in times[0])}; direct "
             f"{' '.join(f'{t:.2f}' for t in times[1])}; ours-cached {' '.join(f'{t:.3f}' for t in times[2])}"]
    what = f"data prep, tokenize + pack {mb:.1f} MB text ({n_tokens:,} tokens, block {block}), cold cache"
    return [Result("B3", what, f"{cold:.2f} s", f"{direct_time:.2f} s (batched fast tokenizer + numpy)",
                   median_ratio(times[0], times[1]), ">= 0.8", parity, notes),
            Result("B3-cache", "data prep served from the cache vs cold", f"{warm:.3f} s (cached)",
                   f"{cold:.2f} s (cold)", median_ratio(times[2], times[0]), ">= 10x", parity)]


def _share(loader: DataLoader, max_batches: int | None = None) -> tuple[float, int, int]:
    """(non-padding share, non-padding tokens, positions) over the loader's batches."""
    real = total = 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        tokens, _ = count_tokens(batch)
        real += int(tokens)
        total += batch["input_ids"].numel()
    return real / total, real, total


def _packing_results(root: Path, smoke: bool) -> list[Result]:
    block, batches = 128, (3 if smoke else None)
    lines = _bundled_lines(_SPLITS["train"])
    bpe = train_tokenizer(lines, "bpe", 300 if smoke else 1000, root / "tok")
    wordpiece = train_tokenizer(lines, "wordpiece", 300 if smoke else 1000, root / "tok")
    files = {s: str(BUNDLED_DIR / n) for s, n in _SPLITS.items()}
    results = []
    for objective, tok, name in (("causal_lm", bpe, "B4-clm"), ("masked_lm", wordpiece, "B4-mlm")):
        packed = _corpus_module(tok, files, root / "cache", block, objective=objective, batch_size=32)
        packed.prepare_data()
        packed.setup("fit")
        share, _, _ = _share(packed.train_dataloader(), batches)
        lbl = _corpus_module(tok, files, root / "cache", block, objective=objective, batch_size=32, line_by_line=True)
        lbl.prepare_data()
        lbl.setup("fit")
        lbl_share, _, _ = _share(lbl.train_dataloader(), batches)
        kept = packed.num_tokens["train"] / sum(len(x) + (objective == "causal_lm") for x in
                                                 tok([t for t in lines if t.strip()])["input_ids"])
        results.append(Result(name, f"{objective}: non-padding share of training batches, packed blocks of {block}",
                              f"{share:.3f} (packed)", f"{lbl_share:.3f} (line by line, dynamic padding)", share,
                              ">= 0.99", "n/a (same tokens)",
                              [f"{name}: packing keeps {kept:.1%} of the corpus tokens (the remainder of each "
                               f"{_MAP_BATCH}-document batch is dropped)"]))
    return results


def _padding_speed(root: Path, smoke: bool, rounds: int | None) -> Result:
    """Classification: the same batches padded per batch (ours, to a multiple of 8) vs to max_length."""
    lines = [line.rsplit(",", 1)[0] for line in _bundled_lines("reviews_train.csv")[1:]]
    tokenizer = train_tokenizer(lines, "wordpiece", 300 if smoke else 1000, root / "tok")
    dm = TextClassificationDataModule(tokenizer=tokenizer, cache_dir=str(root / "cache"), batch_size=32,
                                      max_length=128)
    dm.prepare_data()
    dm.setup("fit")
    size = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64) if smoke else \
        dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256)  # classify_demo
    module = SequenceClassificationModule(model_type="bert", vocab_size=len(tokenizer), num_labels=dm.num_labels,
                                          special_token_ids={"pad_token_id": tokenizer.pad_token_id}, dropout=0.0,
                                          max_position_embeddings=512, **size)
    train = dm.datasets["train"]
    collators = [dm.collate_fn, DataCollatorWithPadding(tokenizer, padding="max_length", max_length=dm.max_length)]
    loaders = [DataLoader(train, batch_size=dm.batch_size, sampler=same_order_sampler(train, dm.seed),
                          collate_fn=c) for c in collators]
    shares = [_share(loader) for loader in loaders]
    sizes = Sizes(warmup=1, steps=2, rounds=1) if smoke else Sizes(warmup=3, steps=10, rounds=rounds or 5)
    alt = Alternation(2, sizes.warmup, sizes.steps, sizes.rounds)
    models = [copy.deepcopy(module.model), copy.deepcopy(module.model)]
    hp = module.hparams
    alt.run([lambda i: plain_loop(models[i], loaders[i], hp, alt.total_steps, 1.0,
                                  lambda loss: alt.step_done(i, loss), {"fused": True})
             for _ in range(2)])
    (dyn_share, _, dyn_total), (max_share, _, max_total) = shares
    return Result("B4-cls", f"classification, batch {dm.batch_size}: dynamic padding (multiple of 8) vs padding "
                            f"to max_length={dm.max_length}, training time",
                  f"share {dyn_share:.3f}, {dyn_total:,} positions/epoch",
                  f"share {max_share:.3f}, {max_total:,} positions/epoch", alt.ratio(0, 1), "report",
                  parity_text(alt.loss_diff(), 1e-4),
                  [f"positions processed: {max_total / dyn_total:.1f}x fewer with dynamic padding",
                   f"round times (s): {alt.round_times(['dynamic', 'max_length'])}"])


def b4(smoke: bool = False, rounds: int | None = None) -> list[Result]:
    root = workdir("b4")
    return [*_packing_results(root, smoke), _padding_speed(root, smoke, rounds)]
