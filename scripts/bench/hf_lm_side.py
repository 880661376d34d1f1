"""The transformers `Trainer` script a user writes for the same work as `llm-train` on a text corpus (the
run_mlm.py / run_clm.py recipe): tokenize, pack into blocks (group_texts), train, evaluate on validation each
epoch, keep the best checkpoint, reload it, predict the test split, save the model; results to <out>/results.json.

Made to compute what our side computes, so that losses can be compared: our training order (seeded `randperm`);
packing as ours (empty lines skipped, EOS after each document for causal LM, the remainder of each 1000-line
batch dropped); masked LM: `DataCollatorForLanguageModeling` with its generator seeded per batch by our rule
(hf_common.SameMasksCollator) and the token-weighted loss over masked positions our `val/loss` is; causal LM:
labels = inputs, `default_data_collator` (run_clm's). Losses are token-weighted means (our `val/loss`)."""

from __future__ import annotations

import argparse
import json
from itertools import chain
from pathlib import Path

import torch.nn.functional as F
from datasets import load_dataset
from transformers import (
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    default_data_collator,
)

from scripts.bench.hf_common import (
    EvalStamps,
    SameMasksCollator,
    SameOrderTrainer,
    common_arguments,
    training_arguments,
)
from scripts.bench.stamps import stamp

stamp("imported")


def main() -> None:
    p = argparse.ArgumentParser()
    common_arguments(p)
    p.add_argument("--objective", choices=["masked_lm", "causal_lm"], required=True)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--mlm-probability", type=float, default=0.15)
    a = p.parse_args()
    causal = a.objective == "causal_lm"

    raw = load_dataset("text", data_files={"train": a.train, "validation": a.validation, "test": a.test})
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    eos = tokenizer.eos_token_id if causal else None

    def group_texts(batch):
        texts = [t for t in batch["text"] if t and t.strip()]
        ids = tokenizer(texts, return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        if eos is not None:
            ids = [x if x and x[-1] == eos else x + [eos] for x in ids]
        flat = list(chain.from_iterable(ids))
        blocks = [flat[i:i + a.block_size] for i in range(0, len(flat) // a.block_size * a.block_size, a.block_size)]
        return {"input_ids": blocks, "labels": [list(b) for b in blocks]} if causal else {"input_ids": blocks}

    data = raw.map(group_texts, batched=True, batch_size=1000, remove_columns=["text"])
    model = (AutoModelForCausalLM if causal else AutoModelForMaskedLM).from_pretrained(a.model)

    # Per-token NLL and argmax of each evaluation batch (the full logits would not fit), scored over the positions
    # our metrics count. Causal LM: our own loss, not the Trainer's eval_loss, which (transformers 5.24, GPT-2's
    # `loss_type` None) divides each block's summed NLL by block_size instead of its block_size - 1 targets.
    def reduce_logits(logits, labels):
        if causal:
            logits, labels = logits[:, :-1], labels[:, 1:]
        nll = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
        return nll, logits.argmax(-1)

    def metrics(pred) -> dict[str, float]:
        (nll, predicted), targets = pred.predictions, pred.label_ids
        if causal:
            targets = targets[:, 1:]
        counted = targets != -100
        accuracy = float((predicted[counted] == targets[counted]).mean())
        return {"nll": float(nll[counted].sum() / counted.sum()), "token_acc" if causal else "mlm_acc": accuracy}

    collator = (default_data_collator if causal
                else SameMasksCollator(tokenizer, mlm_probability=a.mlm_probability, mask_seed=a.seed))
    args = training_arguments(a, len(data["train"]), "loss", greater_is_better=False)
    trainer = SameOrderTrainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data["validation"],
                               data_collator=collator, compute_metrics=metrics, callbacks=[EvalStamps()],
                               preprocess_logits_for_metrics=reduce_logits)
    trainer.data_seed = a.seed
    stamp("train_start")
    trainer.train()
    stamp("train_end")
    val = min((h for h in trainer.state.log_history if "eval_loss" in h), key=lambda h: h["eval_loss"])
    test = trainer.predict(data["test"]).metrics
    stamp("test_end")
    trainer.save_model(str(Path(a.out) / "hf_model"))
    tokenizer.save_pretrained(str(Path(a.out) / "hf_model"))
    acc = "token_acc" if causal else "mlm_acc"
    results = {"val": {"val/loss": val["eval_nll"], f"val/{acc}": val[f"eval_{acc}"]},
               "test": {"test/loss": test["test_nll"], f"test/{acc}": test[f"test_{acc}"]}}
    (Path(a.out) / "results.json").write_text(json.dumps({
        **results, "global_step": trainer.state.global_step,
        "train_losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}))


if __name__ == "__main__":
    main()
