"""NER and extractive QA side by side with transformers' `Trainer` (the run_ner / run_qa flow): test F1 (and EM),
and the wall time of the whole command, same model, data and hyper-parameters, rounds alternated A B A B.

    python -m scripts.compare.vs_trainer ner                     # a small BERT built here, the bundled demo data
    python -m scripts.compare.vs_trainer qa --train_rows 400 --epochs 2 --rounds 1
    python -m scripts.compare.vs_trainer ner --model_dir bert-base-cased-dir --train_file train.jsonl \\
        --validation_file dev.jsonl --test_file test.jsonl --learning_rate 5e-5 --epochs 3 --batch_size 32

Both sides: fine-tune `--model_dir` (default: a BERT of the demos' size, random weights, a WordPiece tokenizer
trained on the training file, saved once under the work dir so it runs offline), validate every epoch, test the
best validation checkpoint (Trainer: `load_best_model_at_end`, `metric_for_best_model=f1`), AdamW with linear
decay after `int(warmup_ratio * steps)` warm-up steps, weight decay off for biases and LayerNorm weights,
gradient clipping at `--max_grad_norm`, the seed (round k: seed + k on both sides, so the medians are over
seeds: head initialisation and data order differ between the two implementations). Each side is a subprocess timed from start to exit (imports,
tokenization and checkpoint writes included), so the wall-time ratio is what a user waits.

The Trainer side follows run_ner.py / run_qa.py (written from their documented flow): NER tokenizes words with
`is_split_into_words`, labels the first sub-word, pads dynamically (`DataCollatorForTokenClassification`) and
scores with seqeval (what `evaluate`'s seqeval wraps); QA tokenizes `truncation="only_second"` with `doc_stride`
windows padded to max_length (run_qa's default `pad_to_max_length=True`), and post-processes n-best start/end
logits over all windows of a question (`n_best_size` 20, `max_answer_length` 30) into SQuAD v1.1 EM/F1 (the
official script's normalisation: lightning_llm.tasks.question_answering.squad_scores, `evaluate` needs the hub).
Figures on a shared machine are noisy: read the per-round lines, not only the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "lightning_llm" / "data" / "bundled"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
# Per task: the bundled files and the demo settings (experiment=ner_demo / qa_demo) for the default small model.
TASKS = {"ner": {"files": "ner", "learning_rate": 1e-3, "epochs": 6, "max_length": 64, "warmup_ratio": 0.1},
         "qa": {"files": "qa", "learning_rate": 3e-3, "epochs": 6, "max_length": 128, "warmup_ratio": 0.1,
                "doc_stride": 32}}


# ----------------------------------------------------------------------------------------------- shared
def _rows(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _subset(path: str, rows: int | None, out: Path) -> str:
    """The first `rows` rows of a JSONL file (all with None)."""
    if not rows:
        return path
    out.write_text("".join(json.dumps(r) + "\n" for r in _rows(path)[:rows]))
    return str(out)


def build_default_model(task: str, train_file: str, out: Path) -> Path:
    """A BERT of the demos' size (hidden 128, 2 layers; QA 4 heads) with random weights and a WordPiece
    tokenizer (2000 pieces) trained on the training file: a local model dir both sides load."""
    from transformers import BertConfig, BertModel

    from lightning_llm.data.tokenizers import train_tokenizer

    if (out / "config.json").is_file():
        return out
    rows = _rows(train_file)
    texts = [" ".join(r["tokens"]) for r in rows] if task == "ner" else \
        [t for r in rows for t in (r["question"], r["context"])]
    tokenizer = train_tokenizer(texts, "wordpiece", 2000, out.parent / "tokenizer_cache")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=2,
                        num_attention_heads=4 if task == "qa" else 2, intermediate_size=256,
                        max_position_embeddings=512, hidden_dropout_prob=0.0 if task == "qa" else 0.1,
                        attention_probs_dropout_prob=0.0 if task == "qa" else 0.1)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def training_arguments(args: argparse.Namespace, out: Path, steps_per_epoch: int) -> Any:
    import torch
    from transformers import TrainingArguments

    total = steps_per_epoch * args.epochs
    return TrainingArguments(
        output_dir=str(out), learning_rate=args.learning_rate, num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
        weight_decay=args.weight_decay, warmup_steps=int(args.warmup_ratio * total), max_grad_norm=args.max_grad_norm,
        seed=args.seed, eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
        metric_for_best_model="f1", greater_is_better=True, save_total_limit=1, logging_strategy="epoch",
        report_to="none", disable_tqdm=True, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0)


# ----------------------------------------------------------------------------------------------- Trainer: NER
def trainer_ner(args: argparse.Namespace, out: Path) -> dict[str, float]:
    import numpy as np
    from datasets import load_dataset
    from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        set_seed,
    )

    set_seed(args.seed)
    raw = load_dataset("json", data_files={"train": args.train_file, "validation": args.validation_file,
                                           "test": args.test_file})
    labels = sorted({t for tags in raw["train"]["tags"] for t in tags})  # run_ner's get_label_list
    label_to_id = {name: i for i, name in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForTokenClassification.from_pretrained(
        args.model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_to_id)

    def tokenize_and_align(batch: dict[str, list]) -> Any:
        enc = tokenizer(batch["tokens"], truncation=True, max_length=args.max_length, is_split_into_words=True)
        enc["labels"] = []
        for i, tags in enumerate(batch["tags"]):
            previous, row = None, []
            for word in enc.word_ids(i):
                row.append(-100 if word is None or word == previous else label_to_id[tags[word]])
                previous = word
            enc["labels"].append(row)
        return enc

    data = raw.map(tokenize_and_align, batched=True, remove_columns=raw["train"].column_names)

    def sequences(predictions: Any, label_ids: Any) -> tuple[list[list[str]], list[list[str]]]:
        pred = np.argmax(predictions, axis=2)
        truth = [[labels[t] for t in row if t != -100] for row in label_ids]
        guess = [[labels[p] for p, t in zip(prow, trow) if t != -100] for prow, trow in zip(pred, label_ids)]
        return truth, guess

    def compute_metrics(prediction: Any) -> dict[str, float]:
        truth, guess = sequences(prediction.predictions, prediction.label_ids)
        return {"precision": precision_score(truth, guess), "recall": recall_score(truth, guess),
                "f1": f1_score(truth, guess), "accuracy": accuracy_score(truth, guess)}

    steps = -(-len(data["train"]) // args.batch_size)
    trainer = Trainer(model=model, args=training_arguments(args, out, steps), train_dataset=data["train"],
                      eval_dataset=data["validation"], processing_class=tokenizer,
                      data_collator=DataCollatorForTokenClassification(tokenizer), compute_metrics=compute_metrics)
    trainer.train()
    test = trainer.predict(data["test"])
    return {"f1": test.metrics["test_f1"], "precision": test.metrics["test_precision"],
            "recall": test.metrics["test_recall"], "acc": test.metrics["test_accuracy"]}


# ----------------------------------------------------------------------------------------------- Trainer: QA
def trainer_qa(args: argparse.Namespace, out: Path) -> dict[str, float]:
    import numpy as np
    from datasets import load_dataset
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, Trainer, default_data_collator, set_seed

    from lightning_llm.tasks.question_answering import squad_scores

    set_seed(args.seed)
    raw = load_dataset("json", data_files={"train": args.train_file, "validation": args.validation_file,
                                           "test": args.test_file})
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(args.model_dir)

    def windows(batch: dict[str, list]) -> Any:
        return tokenizer([q.lstrip() for q in batch["question"]], batch["context"], truncation="only_second",
                         max_length=args.max_length, stride=args.doc_stride, return_overflowing_tokens=True,
                         return_offsets_mapping=True, padding="max_length")

    def train_features(batch: dict[str, list]) -> Any:
        enc = windows(batch)
        sample_map, offsets_all = enc.pop("overflow_to_sample_mapping"), enc.pop("offset_mapping")
        enc["start_positions"], enc["end_positions"] = [], []
        for i, offsets in enumerate(offsets_all):
            cls = enc["input_ids"][i].index(tokenizer.cls_token_id)
            seq = enc.sequence_ids(i)
            answers = batch["answers"][sample_map[i]]
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            first = seq.index(1)
            last = len(seq) - 1 - seq[::-1].index(1)
            if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
                enc["start_positions"].append(cls)
                enc["end_positions"].append(cls)
                continue
            s = first
            while s <= last and offsets[s][0] <= start_char:
                s += 1
            e = last
            while e >= first and offsets[e][1] >= end_char:
                e -= 1
            enc["start_positions"].append(s - 1)
            enc["end_positions"].append(e + 1)
        return enc

    def eval_features(batch: dict[str, list]) -> Any:
        enc = windows(batch)
        sample_map = enc.pop("overflow_to_sample_mapping")
        enc["example_id"] = [batch["id"][row] for row in sample_map]
        enc["offset_mapping"] = [[o if s == 1 else None for o, s in zip(offsets, enc.sequence_ids(i))]
                                 for i, offsets in enumerate(enc["offset_mapping"])]
        return enc

    train = raw["train"].map(train_features, batched=True, remove_columns=raw["train"].column_names)
    evals = {split: raw[split].map(eval_features, batched=True, remove_columns=raw[split].column_names)
             for split in ("validation", "test")}

    def postprocess(split: str, start_logits: Any, end_logits: Any) -> dict[str, float]:
        """run_qa's postprocess_qa_predictions (v1): n-best start/end pairs inside the context, best over windows."""
        by_example = defaultdict(list)
        for i, example_id in enumerate(evals[split]["example_id"]):
            by_example[example_id].append(i)
        offsets_all = evals[split]["offset_mapping"]
        preds, golds = [], []
        for example in raw[split]:
            candidates = []
            for i in by_example[example["id"]]:
                offsets = offsets_all[i]
                for s in np.argsort(start_logits[i])[-1:-21:-1].tolist():
                    for e in np.argsort(end_logits[i])[-1:-21:-1].tolist():
                        if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                            continue
                        if e < s or e - s + 1 > 30:
                            continue
                        candidates.append((start_logits[i][s] + end_logits[i][e], offsets[s][0], offsets[e][1]))
            best = max(candidates, key=lambda c: c[0]) if candidates else None
            text = example["context"][best[1]:best[2]] if best else ""
            preds.append(text or "empty")
            golds.append(example["answers"]["text"])
        return squad_scores(preds, golds)

    class QATrainer(Trainer):
        """Evaluation = logits over all windows, then run_qa's post-processing into EM/F1 (as trainer_qa.py)."""

        def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None,
                     metric_key_prefix: str = "eval") -> dict[str, float]:
            split = "test" if metric_key_prefix == "test" else "validation"
            loader = self.get_eval_dataloader(evals[split])
            output = self.evaluation_loop(loader, description="Evaluation", prediction_loss_only=False,
                                          metric_key_prefix=metric_key_prefix)
            start, end = output.predictions
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in postprocess(split, start, end).items()}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    steps = -(-len(train) // args.batch_size)
    trainer = QATrainer(model=model, args=training_arguments(args, out, steps), train_dataset=train,
                        eval_dataset=evals["validation"], processing_class=tokenizer,
                        data_collator=default_data_collator)
    trainer.train()
    test = trainer.evaluate(metric_key_prefix="test")
    return {"f1": test["test_f1"], "exact_match": test["test_exact_match"]}


# ----------------------------------------------------------------------------------------------- our side
def ours_command(args: argparse.Namespace, out: Path) -> list[str]:
    model, data = ("token_classifier", "token_classification") if args.task == "ner" else \
        ("extractive_qa", "question_answering")
    # What the `llm-train` console script runs (pyproject.toml: lightning_llm.train:main), argv[0] included.
    cmd = [sys.executable, "-c", "import sys; sys.argv[0] = 'llm-train'; "
           "from lightning_llm.train import main; main()", f"model={model}", f"data={data}",
           f"model.pretrained_model_name_or_path={args.model_dir}", f"model.learning_rate={args.learning_rate}",
           f"model.weight_decay={args.weight_decay}", f"model.warmup_ratio={args.warmup_ratio}",
           f"trainer.max_epochs={args.epochs}", f"trainer.gradient_clip_val={args.max_grad_norm}",
           f"data.batch_size={args.batch_size}", f"data.max_length={args.max_length}", f"seed={args.seed}",
           f"data.train_file={args.train_file}", f"data.validation_file={args.validation_file}",
           f"data.test_file={args.test_file}", f"paths.output_dir={out}", f"paths.cache_dir={out / 'cache'}",
           "callbacks.rich_progress_bar=null", "logger=none", "export=false", "task_name=vs_trainer"]
    if args.task == "qa":
        cmd.append(f"data.doc_stride={args.doc_stride}")
    return cmd


def run_side(side: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    """One side as a subprocess, timed from start to exit."""
    if side == "ours":
        cmd = ours_command(args, out)
    else:
        cmd = [sys.executable, "-m", "scripts.compare.vs_trainer", args.task, "--_side", "trainer", "--_out", str(out),
               *(f"--{k}={v}" for k, v in vars(args).items() if k in SHARED and v is not None)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**os.environ, **OFFLINE})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    if side == "ours":
        test = json.loads((out / "results.json").read_text())["test"]
        metrics = {k.split("/", 1)[1]: v for k, v in test.items()}
    else:
        metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**metrics, "seconds": seconds}


SHARED = ("model_dir", "train_file", "validation_file", "test_file", "learning_rate", "epochs", "batch_size",
          "max_length", "doc_stride", "warmup_ratio", "weight_decay", "max_grad_norm", "seed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--model_dir", help="HF encoder dir (default: a small random BERT built here)")
    for split in ("train", "validation", "test"):
        parser.add_argument(f"--{split}_file", help=f"JSONL (default: the bundled demo {split} file)")
    parser.add_argument("--train_rows", type=int, help="use the first N training rows only (a smaller run)")
    parser.add_argument("--learning_rate", type=float)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int)
    parser.add_argument("--doc_stride", type=int, help="QA (default 128, the demo model 32)")
    parser.add_argument("--warmup_ratio", type=float)
    parser.add_argument("--weight_decay", type=float, default=0.01)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rounds", type=int, default=2,
                        help="A B rounds, the order flipped each round; round k uses seed + k on both sides")
    parser.add_argument("--workdir", help="default: a temporary directory")
    parser.add_argument("--_side", help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._side == "trainer":
        os.environ.update(OFFLINE)
        out = Path(args._out)
        metrics = (trainer_ner if args.task == "ner" else trainer_qa)(args, out)
        print(json.dumps({k: float(v) for k, v in metrics.items()}))
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix=f"vs_trainer_{args.task}_"))
    work.mkdir(parents=True, exist_ok=True)
    defaults = TASKS[args.task]
    for split in ("train", "validation", "test"):
        if getattr(args, f"{split}_file") is None:
            setattr(args, f"{split}_file", str(BUNDLED / f"{defaults['files']}_{split}.jsonl"))
    args.train_file = _subset(args.train_file, args.train_rows, work / "train_subset.jsonl")
    own_model = args.model_dir is None
    if own_model:
        args.model_dir = str(build_default_model(args.task, args.train_file, work / "model"))
    for key in ("learning_rate", "epochs", "max_length", "warmup_ratio", "doc_stride"):
        if getattr(args, key) is None:
            setattr(args, key, defaults.get(key, 128) if own_model else {"learning_rate": 5e-5, "epochs": 3,
                                                                          "max_length": 384 if args.task == "qa"
                                                                          else 128, "warmup_ratio": 0.0,
                                                                          "doc_stride": 128}[key])
    print(f"{args.task}: model {args.model_dir}, train {args.train_file}; lr {args.learning_rate}, epochs "
          f"{args.epochs}, batch {args.batch_size}, max_length {args.max_length}"
          + (f", doc_stride {args.doc_stride}" if args.task == "qa" else "")
          + f", warmup_ratio {args.warmup_ratio}, weight_decay {args.weight_decay}, clip {args.max_grad_norm}, "
            f"seed {args.seed}", flush=True)
    names = ["f1", "precision", "recall", "acc"] if args.task == "ner" else ["exact_match", "f1"]
    results: dict[str, list[dict[str, float]]] = {"trainer": [], "ours": []}
    for round_ in range(args.rounds):
        order = ("trainer", "ours") if round_ % 2 == 0 else ("ours", "trainer")
        seeded = argparse.Namespace(**{**vars(args), "seed": args.seed + round_})
        for side in order:
            m = run_side(side, seeded, work / f"{side}_{round_}")
            results[side].append(m)
            print(f"round {round_ + 1} (seed {seeded.seed}) {side:8s} " + " ".join(f"{n} {m[n]:.4f}" for n in names)
                  + f"  wall {m['seconds']:.1f} s", flush=True)
    print(f"\n| {args.task} (median of {args.rounds}) | Trainer | llm-train | difference |\n|---|---|---|---|")
    for n in [*names, "seconds"]:
        t, o = (statistics.median(r[n] for r in results[s]) for s in ("trainer", "ours"))
        print(f"| {n if n != 'seconds' else 'wall s'} | {t:.4f} | {o:.4f} | {o - t:+.4f} |")
    wall = [t["seconds"] / o["seconds"] for t, o in zip(results["trainer"], results["ours"])]
    print(f"wall-time ratio Trainer / llm-train per round: {', '.join(f'{w:.2f}' for w in wall)} "
          f"(median {statistics.median(wall):.2f}; > 1: llm-train is faster); work dir {work}")


if __name__ == "__main__":
    main()
