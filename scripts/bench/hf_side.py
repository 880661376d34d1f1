"""The transformers `Trainer` script a user writes for the same work as `llm-train`: fine-tune a sequence
classifier, evaluate on validation each epoch, keep the best checkpoint, reload it, predict the test split, save
the model; results to <out>/results.json. Our training permutation (seeded `randperm`) for loss parity."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import load_dataset  # noqa: E402
from torch.utils.data import RandomSampler  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from bench.phases import stamp  # noqa: E402

stamp("imported")


class EvalStamps(TrainerCallback):
    """Evaluation runs between the end of an epoch and `on_evaluate` (then the checkpoint is saved)."""

    def on_epoch_end(self, args, state, control, **kwargs):
        stamp("eval_start", accumulate=True)

    def on_evaluate(self, args, state, control, **kwargs):
        stamp("eval_end", accumulate=True)


class SameOrderTrainer(Trainer):
    data_seed = 42

    def _get_train_sampler(self, train_dataset=None) -> RandomSampler:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return RandomSampler(dataset, generator=torch.Generator().manual_seed(self.data_seed))


def main() -> None:
    p = argparse.ArgumentParser()
    for name in ("model", "train", "validation", "test", "out"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()

    raw = load_dataset("csv", data_files={"train": a.train, "validation": a.validation, "test": a.test})
    names = sorted(set(raw["train"]["label"]))
    label2id = {n: i for i, n in enumerate(names)}
    tokenizer = AutoTokenizer.from_pretrained(a.model)

    def encode(batch):
        out = tokenizer(batch["text"], truncation=True, max_length=a.max_length)
        out["labels"] = [label2id[x] for x in batch["label"]]
        return out

    data = raw.map(encode, batched=True, remove_columns=raw["train"].column_names)
    model = AutoModelForSequenceClassification.from_pretrained(
        a.model, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label2id)
    steps = -(-len(data["train"]) // a.batch_size) * a.epochs
    args = TrainingArguments(
        output_dir=a.out, per_device_train_batch_size=a.batch_size, per_device_eval_batch_size=a.eval_batch_size,
        num_train_epochs=a.epochs, learning_rate=a.lr, weight_decay=0.01, warmup_steps=int(a.warmup_ratio * steps),
        lr_scheduler_type="linear", max_grad_norm=1.0, optim="adamw_torch_fused", eval_strategy="epoch",
        save_strategy="epoch", save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="accuracy",
        logging_steps=10, report_to="none", seed=a.seed, use_cpu=not torch.cuda.is_available(),
        dataloader_pin_memory=False, accelerator_config={"use_seedable_sampler": False})

    def accuracy(pred) -> dict[str, float]:
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    trainer = SameOrderTrainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["validation"],
                               data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy,
                               callbacks=[EvalStamps()])
    trainer.data_seed = a.seed
    stamp("train_start")
    trainer.train()
    stamp("train_end")
    val = max((h for h in trainer.state.log_history if "eval_accuracy" in h), key=lambda h: h["eval_accuracy"])
    test = trainer.predict(data["test"])
    stamp("test_end")
    trainer.save_model(str(Path(a.out) / "hf_model"))
    tokenizer.save_pretrained(str(Path(a.out) / "hf_model"))
    (Path(a.out) / "results.json").write_text(json.dumps({
        "val": {"val/loss": val.get("eval_loss"), "val/acc": val.get("eval_accuracy")},
        "test": {"test/loss": test.metrics["test_loss"], "test/acc": test.metrics["test_accuracy"]},
        "train_losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}))


if __name__ == "__main__":
    main()
