"""The transformers `Trainer` script a user writes for the same work as `llm-train`: fine-tune a sequence
classifier, evaluate on validation each epoch, keep the best checkpoint, reload it, predict the test split, save
the model; results to <out>/results.json. Our training permutation (seeded `randperm`) for loss parity."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from datasets import load_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from scripts.bench.hf_common import EvalStamps, SameOrderTrainer, common_arguments, training_arguments
from scripts.bench.stamps import stamp

stamp("imported")


def main() -> None:
    p = argparse.ArgumentParser()
    common_arguments(p)
    p.add_argument("--max-length", type=int, default=64)
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
    args = training_arguments(a, len(data["train"]), "accuracy", greater_is_better=True)

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
        "global_step": trainer.state.global_step,
        "train_losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}))


if __name__ == "__main__":
    main()
