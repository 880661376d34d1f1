"""B6: the whole `llm-train` process against a transformers `Trainer` script doing the same work, at a real
model shape (MiniLM-L6: 6 layers, 384 hidden, 12 heads, 1536 intermediate, 30,522-token embedding), built from a
config (no download): fine-tune on the bundled reviews (3,000 train rows, length 64, batch 32, 1 epoch), evaluate
on validation each epoch, keep the best checkpoint, reload it, predict the test split, save the model.

Each side is a fresh process with a cold data cache, run A B A B; phases come from wall-clock stamps inside each
process (scripts/bench/phases.py). Both sides start from the same saved weights (dropout off, so the two runs are
the same computation), the same permutation of the training set, AdamW (fused), linear warm-up schedule, clipping
at 1.0 and float32; their validation loss and accuracies are compared before any time is reported.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import Result, workdir

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parents[1]
BUNDLED = REPO / "lightning_llm" / "data" / "bundled"
PHASES = ("import", "data", "train", "eval", "test", "export", "total")
MINILM = {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
          "intermediate_size": 1536}
SMOKE = {"vocab_size": 1000, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
         "intermediate_size": 64}
LOSS_TOL, ACC_TOL = 1e-3, 0.01


def _assets(root: Path, shape: dict[str, int], rows: int | None) -> dict[str, Path]:
    """Data files and one saved model + tokenizer that both sides load."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from lightning_llm.data.tokenizers import _train_wordpiece

    files = {}
    for split in ("train", "validation", "test"):
        lines = (BUNDLED / f"reviews_{split}.csv").read_text().splitlines(keepends=True)
        files[split] = root / f"{split}.csv"
        files[split].write_text("".join(lines[:rows + 1] if rows else lines))
    texts = [line.rsplit(",", 1)[0] for line in files["train"].read_text().splitlines()[1:]]
    tokenizer = _train_wordpiece(texts, 30522)
    names = sorted({line.rsplit(",", 1)[1] for line in files["train"].read_text().splitlines()[1:]})
    torch.manual_seed(0)
    config = BertConfig(**shape, max_position_embeddings=512, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, num_labels=len(names), id2label=dict(enumerate(names)),
                        label2id={n: i for i, n in enumerate(names)}, pad_token_id=tokenizer.pad_token_id)
    model_dir = root / "model"
    BertForSequenceClassification(config).save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    return {**files, "model": model_dir}


def _commands(side: str, assets: dict[str, Path], out: Path, overrides: list[str]) -> list[str]:
    if side == "ours":
        return [sys.executable, str(BENCH_DIR / "our_side.py"), "model=bert_classifier", "data=text_classification",
                f"model.pretrained_model_name_or_path={assets['model']}", f"data.train_file={assets['train']}",
                f"data.validation_file={assets['validation']}", f"data.test_file={assets['test']}",
                "data.max_length=64", "data.batch_size=32", "trainer.max_epochs=1", "model.learning_rate=5e-5",
                "model.warmup_ratio=0.1", f"paths.output_dir={out}", "allow_targets=[bench]",
                "+callbacks.bench_phases._target_=bench.phases.PhaseTimer", *overrides]
    return [sys.executable, str(BENCH_DIR / "hf_side.py"), f"--model={assets['model']}", f"--train={assets['train']}",
            f"--validation={assets['validation']}", f"--test={assets['test']}", f"--out={out}", "--batch-size=32",
            "--eval-batch-size=64", "--max-length=64", "--lr=5e-5", "--warmup-ratio=0.1"]


def _run(side: str, assets: dict[str, Path], root: Path, overrides: list[str]) -> dict[str, Any]:
    out = workdir(f"b6-{side}")
    stamps = out / "stamps.json"
    env = {**os.environ, "BENCH_STAMPS": str(stamps), "LIGHTNING_LLM_CACHE": str(out / "cache"),
           "HF_DATASETS_CACHE": str(out / "hf_cache"), "PYTHONPATH": str(BENCH_DIR.parent)}
    t0 = time.time()
    proc = subprocess.run(_commands(side, assets, out / "run", overrides), cwd=out, env=env, capture_output=True,
                          text=True)
    t_end = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"B6 {side} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    s = json.loads(stamps.read_text())
    evaluation = sum(e - b for b, e in zip(s.get("eval_start", []), s.get("eval_end", [])))
    phases = {"import": s["imported"] - t0, "data": s["train_start"] - s["imported"],
              "train": s["train_end"] - s["train_start"] - evaluation, "eval": evaluation,
              "test": s["test_end"] - s["train_end"], "export": t_end - s["test_end"], "total": t_end - t0}
    results = json.loads((out / "run" / "results.json").read_text())
    return {"phases": phases, "val": results["val"], "test": results["test"]}


def b6(smoke: bool = False, pairs: int | None = None, overrides: list[str] | None = None) -> list[Result]:
    root = workdir("b6")
    rows = 96 if smoke else None
    assets = _assets(root, SMOKE if smoke else MINILM, rows)
    steps = -(-(rows or 3000) // 32)
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "hf": []}
    for _ in range(pairs or (1 if smoke else 2)):
        for side in ("ours", "hf"):
            runs[side].append(_run(side, assets, root, list(overrides or [])))
            print(f"  B6 {side}: " + ", ".join(f"{k} {v:.1f} s" for k, v in runs[side][-1]["phases"].items()),
                  flush=True)
    ours, hf = runs["ours"][0], runs["hf"][0]
    diffs = {"val/loss": abs(ours["val"]["val/loss"] - hf["val"]["val/loss"]),
             "val/acc": abs(ours["val"]["val/acc"] - hf["val"]["val/acc"]),
             "test/acc": abs(ours["test"]["test/acc"] - hf["test"]["test/acc"])}
    ok = diffs["val/loss"] <= LOSS_TOL and diffs["val/acc"] <= ACC_TOL and diffs["test/acc"] <= ACC_TOL
    parity = (f"{'ok' if ok else 'MISMATCH'} (val/loss diff {diffs['val/loss']:.1e}, val/acc diff "
              f"{diffs['val/acc']:.3f}, test/acc diff {diffs['test/acc']:.3f})")

    def ratio(phase: str) -> float:  # median over pairs of Trainer time / our time: > 1 = we are faster
        return statistics.median(h["phases"][phase] / o["phases"][phase] for o, h in zip(runs["ours"], runs["hf"]))

    def median(side: str, phase: str) -> float:
        return statistics.median(r["phases"][phase] for r in runs[side])

    table = " | ".join(f"{p} {median('ours', p):.1f}/{median('hf', p):.1f} s ({ratio(p):.2f})" for p in PHASES)
    shape = "tiny BERT (smoke)" if smoke else "MiniLM-L6 shape (22.7M params)"
    what = f"{shape}, {rows or 3000} rows x len 64, batch 32, 1 epoch + eval + best ckpt + test + save"
    return [Result("B6", f"whole process, s ({what})", f"{median('ours', 'total'):.1f} s",
                   f"{median('hf', 'total'):.1f} s (transformers Trainer script)", ratio("total"),
                   ">= 1.11 (min 1.0)", parity,
                   [f"phases ours/Trainer (Trainer/ours): {table}",
                    f"test/acc ours {ours['test']['test/acc']:.4f}, Trainer {hf['test']['test/acc']:.4f}"]),
            Result("B6-step", f"training step, ms ({shape}, batch 32)",
                   f"{median('ours', 'train') / steps * 1e3:.0f} ms/step",
                   f"{median('hf', 'train') / steps * 1e3:.0f} ms/step (transformers Trainer)", ratio("train"),
                   ">= 1.0", parity, [])]
