"""Our seq2seq run (`llm-train model=seq2seq`) side by side with transformers' `Seq2SeqTrainer` in the
run_translation / run_summarization flow (`predict_with_generate=True`): the same from-scratch model config,
tokenizer, data, epochs, batch, AdamW settings, linear warmup schedule, clipping and generation settings; each
side validates with generation every epoch and predicts the test split at the end. Prints BLEU/chrF
(translation) or ROUGE-L (summarization) of both on the test split and the wall-time ratio.

    python -m scripts.compare.seq2seq_vs_trainer --task translation                # bundled demo data
    python -m scripts.compare.seq2seq_vs_trainer --task summarization --rounds 2   # alternating rounds
    python -m scripts.compare.seq2seq_vs_trainer --task translation --train-file train.jsonl \
        --validation-file val.jsonl --test-file test.jsonl --hidden-size 256 --epochs 5

Order: one short untimed warm-up of ours (trains the tokenizer both sides use and fills our tokenization cache;
transformers' `datasets.map` cache is filled by its first round), then timed rounds Trainer, ours, ours, Trainer,
... in one process with the same torch threads; round i of both sides uses seed+i (weights, batch order), so
several rounds also show the seed-to-seed spread of the metric. Wall time covers data loading and
tokenization, training, per-epoch generation-based validation and the test predictions (ours also writes
checkpoints and the hf_model/ export; the Trainer saves nothing). Both sides' test predictions are scored the
run_* way: sacrebleu `corpus_bleu`/`corpus_chrf` (13a), rouge-score with stemming (mean F-measure over examples;
run_summarization's `evaluate` reports a bootstrap median of the same numbers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"})

import torch  # noqa: E402
from datasets import load_dataset  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import open_dict  # noqa: E402
from rouge_score import rouge_scorer  # noqa: E402
from sacrebleu import corpus_bleu, corpus_chrf  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    set_seed,
)

import lightning_llm.config.store  # noqa: E402,F401  (the config schemas the YAML options extend)
from lightning_llm.config import CONFIG_DIR  # noqa: E402
from lightning_llm.data.sources import BUNDLED_DIR  # noqa: E402
from lightning_llm.tasks.seq2seq import split_sentences  # noqa: E402
from lightning_llm.train import train  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("translation", "summarization"), default="translation")
    for split in ("train", "validation", "test"):
        p.add_argument(f"--{split}-file", default=None, help="JSON/JSONL (default: the bundled demo split)")
    p.add_argument("--source-column", default="source")
    p.add_argument("--target-column", default="target")
    p.add_argument("--source-prefix", default="")
    p.add_argument("--model-type", default="t5")
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--layers", type=int, default=2, help="encoder and decoder each")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=256)
    p.add_argument("--vocab", type=int, default=400)
    p.add_argument("--epochs", type=int, default=None, help="default: the demo experiment's")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup-ratio", type=float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-source-length", type=int, default=None)
    p.add_argument("--max-target-length", type=int, default=None)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1, help="timed rounds per side (alternating)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workdir", default=None)
    return p.parse_args()


def data_files(args: argparse.Namespace) -> dict[str, str]:
    files = {s: getattr(args, f"{s}_file") or str(BUNDLED_DIR / f"{args.task}_{s}.jsonl")
             for s in ("train", "validation", "test")}
    return {s: str(Path(f).resolve()) for s, f in files.items()}


# ----------------------------------------------------------------------------------------------- ours
def our_overrides(args: argparse.Namespace, files: dict[str, str]) -> list[str]:
    experiment = "translation_demo" if args.task == "translation" else "summarization_demo"
    out = [f"experiment={experiment}", f"model.model_type={args.model_type}", f"model.hidden_size={args.hidden_size}",
           f"model.num_hidden_layers={args.layers}", f"model.num_attention_heads={args.heads}",
           f"model.intermediate_size={args.ffn}", f"model.tokenizer_vocab_size={args.vocab}",
           f"model.learning_rate={args.lr}", f"model.warmup_ratio={args.warmup_ratio}",
           f"model.weight_decay={args.weight_decay}", f"model.generation_max_new_tokens={args.max_new_tokens}",
           f"model.generation_num_beams={args.num_beams}", f"data.batch_size={args.batch_size}",
           f"data.source_column={args.source_column}", f"data.target_column={args.target_column}",
           f"data.source_prefix='{args.source_prefix}'", f"data.seed={args.seed}", "callbacks.rich_progress_bar=null",
           "logger=csv", *(f"data.{s}_file={f}" for s, f in files.items())]
    if args.epochs is not None:
        out.append(f"trainer.max_epochs={args.epochs}")
    for key in ("max_source_length", "max_target_length"):
        if getattr(args, key) is not None:
            out.append(f"data.{key}={getattr(args, key)}")
    return out


def run_ours_config(overrides: list[str]) -> Any:
    """The composed config of our run (the Trainer side copies its settings from it)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def run_ours(overrides: list[str], run_dir: Path, cache_dir: Path) -> dict[str, Any]:
    cfg = run_ours_config(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir, cfg.paths.log_dir, cfg.paths.cache_dir = str(run_dir), str(run_dir / "logs"), \
            str(cache_dir)
        del cfg["hydra"]
    start = time.perf_counter()
    results = train(cfg)
    wall = time.perf_counter() - start
    GlobalHydra.instance().clear()
    rows = [json.loads(line) for line in (run_dir / "predictions_test.jsonl").read_text().splitlines()]
    return {"wall": wall, "steps": results["global_step"], "epochs": cfg.trainer.max_epochs, "cfg": cfg,
            "predictions": [r["prediction"] for r in rows], "references": [r["reference"] for r in rows],
            "test": results["test"]}


# ----------------------------------------------------------------------------------------------- Seq2SeqTrainer
def run_trainer(args: argparse.Namespace, files: dict[str, str], ours_cfg: Any, tokenizer_dir: Path,
                model_config: dict[str, Any], out_dir: Path, seed: int) -> dict[str, Any]:
    """run_translation.py / run_summarization.py, reduced to what these settings use."""
    start = time.perf_counter()
    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = AutoConfig.for_model(**model_config)
    model = AutoModelForSeq2SeqLM.from_config(config)
    model.generation_config.update(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                                   decoder_start_token_id=config.decoder_start_token_id,
                                   eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id)
    data = ours_cfg.data
    raw = load_dataset("json", data_files=files)

    def preprocess(batch: dict[str, list]) -> dict[str, list]:
        inputs = [args.source_prefix + s for s in batch[args.source_column]]
        out = tokenizer(inputs, max_length=data.max_source_length, truncation=True)
        out["labels"] = tokenizer(text_target=batch[args.target_column], max_length=data.max_target_length,
                                  truncation=True)["input_ids"]
        return out

    tokenized = {s: ds.map(preprocess, batched=True, remove_columns=ds.column_names) for s, ds in raw.items()}
    steps_per_epoch = math.ceil(len(tokenized["train"]) / args.batch_size)
    total = steps_per_epoch * ours_cfg.trainer.max_epochs
    hp = ours_cfg.model
    training_args = Seq2SeqTrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size, num_train_epochs=ours_cfg.trainer.max_epochs,
        learning_rate=hp.learning_rate, weight_decay=hp.weight_decay, adam_epsilon=1e-8, lr_scheduler_type="linear",
        warmup_steps=int(hp.warmup_ratio * total), max_grad_norm=ours_cfg.trainer.gradient_clip_val,
        optim="adamw_torch_fused", eval_strategy="epoch", save_strategy="no", report_to="none",
        logging_steps=ours_cfg.trainer.log_every_n_steps, predict_with_generate=True, seed=seed,
        dataloader_pin_memory=False, use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, pad_to_multiple_of=8)

    def decode(ids: Any) -> list[str]:
        ids = [[t for t in row if t >= 0] for row in ids.tolist()]  # -100 padding of predictions and labels
        return [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def compute_metrics(pred: Any) -> dict[str, float]:
        return scores(decode(pred.predictions), decode(pred.label_ids))

    trainer = Seq2SeqTrainer(model=model, args=training_args, train_dataset=tokenized["train"],
                             eval_dataset=tokenized["validation"], processing_class=tokenizer,
                             data_collator=collator, compute_metrics=compute_metrics)
    trainer.train()
    predicted = trainer.predict(tokenized["test"], metric_key_prefix="test")
    wall = time.perf_counter() - start
    return {"wall": wall, "steps": trainer.state.global_step, "predictions": decode(predicted.predictions),
            "references": decode(predicted.label_ids)}


# ----------------------------------------------------------------------------------------------- scoring
def scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    """What run_translation / run_summarization report, straight from sacrebleu and rouge-score."""
    scorer = rouge_scorer.RougeScorer(["rougeL", "rougeLsum"], use_stemmer=True)
    rouge = [scorer.score("\n".join(split_sentences(r)), "\n".join(split_sentences(p)))
             for p, r in zip(predictions, references)]
    return {"bleu": corpus_bleu(predictions, [references]).score,
            "chrf": corpus_chrf(predictions, [references]).score,
            "rougeL": 100 * statistics.fmean(s["rougeL"].fmeasure for s in rouge),
            "rougeLsum": 100 * statistics.fmean(s["rougeLsum"].fmeasure for s in rouge)}


def main() -> None:
    args = parse_args()
    files = data_files(args)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="s2s_vs_trainer_"))
    cache = work / "cache"
    os.environ["LIGHTNING_LLM_CACHE"] = str(cache)
    overrides = our_overrides(args, files)
    print(f"warm-up (untimed): our run trains the shared tokenizer and fills our tokenization cache ({work})")
    short = [o for o in overrides if not o.startswith("trainer.max_epochs=")]
    run_ours([*short, "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
              "+trainer.limit_test_batches=1"], work / "warmup", cache)
    tokenizer_dir = work / "warmup" / "tokenizer"
    model_config = json.loads((work / "warmup" / "hf_model" / "config.json").read_text())
    model_config = {k: v for k, v in model_config.items()
                    if k not in ("architectures", "transformers_version", "dtype", "torch_dtype")}
    ours_runs, hf_runs = [], []
    ours_cfg = run_ours_config(overrides)
    for i in range(args.rounds):
        order = ("hf", "ours") if i % 2 == 0 else ("ours", "hf")
        seed = args.seed + i  # initial weights and batch order; round i of both sides shares it
        for side in order:
            if side == "hf":
                hf_runs.append(run_trainer(args, files, ours_cfg, tokenizer_dir, model_config, work / f"hf{i}", seed))
                print(f"round {i + 1}: Seq2SeqTrainer {hf_runs[-1]['wall']:.1f} s")
            else:
                ours_runs.append(run_ours([*overrides, f"seed={seed}"], work / f"ours{i}", cache))
                print(f"round {i + 1}: ours {ours_runs[-1]['wall']:.1f} s")
    metric_names = ("bleu", "chrf") if args.task == "translation" else ("rougeL", "rougeLsum", "bleu")
    decoding = "greedy" if args.num_beams == 1 else f"{args.num_beams} beams"
    print(f"\n{args.task}: {args.model_type} d_model {args.hidden_size}, {args.layers}+{args.layers} layers, "
          f"{ours_runs[0]['epochs']} epochs of batch {args.batch_size}, lr {args.lr}, {decoding}")
    print(f"steps: ours {ours_runs[0]['steps']}, Seq2SeqTrainer {hf_runs[0]['steps']}; "
          f"test examples: {len(ours_runs[0]['predictions'])} / {len(hf_runs[0]['predictions'])}")
    print("| round | side | " + " | ".join(f"test/{m}" for m in metric_names) + " | wall s |")
    print("|---|---|" + "---|" * (len(metric_names) + 1))
    for i, (ours, hf) in enumerate(zip(ours_runs, hf_runs)):
        for name, run in (("ours", ours), ("Seq2SeqTrainer", hf)):
            values = scores(run["predictions"], run["references"])
            print(f"| {i + 1} | {name} | " + " | ".join(f"{values[m]:.2f}" for m in metric_names)
                  + f" | {run['wall']:.1f} |")
    for name in metric_names[:1]:
        means = [statistics.fmean(scores(r["predictions"], r["references"])[name] for r in runs)
                 for runs in (ours_runs, hf_runs)]
        print(f"test/{name} mean over {args.rounds} seed(s): ours {means[0]:.2f}, Seq2SeqTrainer {means[1]:.2f} "
              f"(difference {means[0] - means[1]:+.2f})")
    ratio = statistics.median(o["wall"] / h["wall"] for o, h in zip(ours_runs, hf_runs))
    print(f"wall time ours / Seq2SeqTrainer (median over rounds): {ratio:.2f} (< 1: ours is faster; a shared, "
          f"noisy machine: compare rounds)")


if __name__ == "__main__":
    sys.exit(main())
