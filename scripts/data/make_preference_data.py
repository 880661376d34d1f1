"""Synthetic preference pairs for `experiment=dpo_demo` (seeded: the same files every run).

The prompts are conversations of the sft_demo kind (scripts/data/make_chat_data.py: facts the user stated, single-
digit arithmetic, capitals, numbers in words) up to the user's last question; `chosen` is the right answer and
`rejected` a plausible wrong one. With `--policy` (a chat model's HF directory, e.g. an sft_demo run's hf_model/),
the rejected reply is that model's own greedy reply wherever it is wrong (on-policy pairs: DPO then works on the
mistakes the model actually makes, typically a default answer of the right kind whatever the conversation said);
elsewhere, and without `--policy`, it is the right answer in the same words with the fact replaced by one of the
same kind the conversation never states (name, city, pet, colour, capital, number word) or an arithmetic result off
by one. Rows are TRL's conversational preference format: prompt = a list of messages, chosen and rejected = one
assistant message each. Writes lightning_llm/data/bundled/preference_{train,validation,test}.jsonl.

The bundled files: `python -m scripts.data.make_preference_data --policy <sft_demo run>/hf_model` with the sft_demo
run of docs/dpo.md (seed 42).

    python -m scripts.data.make_preference_data [--train 1000 --validation 200 --test 200 --seed 1 --policy DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from scripts.data import make_chat_data as chat

OUT = chat.OUT
TABLES = [chat.NAMES, chat.CITIES, chat.PETS, chat.COLOURS, sorted(chat.CAPITALS.values()), chat.NUMBERS]


def wrong_answer(answer: str, messages: list[dict], rng: random.Random) -> str:
    """`answer` with its last word (the fact) replaced by a plausible wrong one."""
    head, value = re.match(r"^(.*\b)(\w+)\.$", answer).groups()
    if value.isdigit():
        wrong = int(value) + rng.choice([-1, 1]) if int(value) > 0 else 1
        return f"{head}{wrong}."
    for table in TABLES:
        if value in table:
            stated = {w for m in messages for w in re.findall(r"\w+", m["content"])}
            return f"{head}{rng.choice([w for w in table if w != value and w not in stated])}."
    raise ValueError(f"no wrong answer for {answer!r}")


def pair(rng: random.Random) -> dict:
    messages = chat.conversation(rng)["messages"]
    answer = messages[-1]["content"]
    return {"prompt": messages[:-1], "chosen": [{"role": "assistant", "content": answer}],
            "rejected": [{"role": "assistant", "content": wrong_answer(answer, messages[:-1], rng)}]}


def on_policy(rows: list[dict], policy: Path) -> None:
    """Replace each row's rejected reply by the policy's greedy reply where that one is wrong (and non-empty)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightning_llm.modules.generation import score_replies

    model = AutoModelForCausalLM.from_pretrained(policy).eval()
    tokenizer = AutoTokenizer.from_pretrained(policy)
    samples = [{"messages": r["prompt"], "reference": r["chosen"][0]["content"]} for r in rows]
    _, records = score_replies(model, tokenizer, samples, max_new_tokens=24)
    wrong = 0
    for row, record in zip(rows, records):
        if not record["exact_match"] and record["prediction"].strip():
            row["rejected"] = [{"role": "assistant", "content": record["prediction"]}]
            wrong += 1
    print(f"{wrong} of {len(rows)} rejected replies are the policy's own")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--validation", type=int, default=200)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--policy", type=Path, default=None, help="a chat model whose wrong replies are rejected")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        rows = [pair(rng) for _ in range(getattr(args, split))]
        if args.policy:
            on_policy(rows, args.policy)
        path = args.out / f"preference_{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {len(rows)} preference pairs to {path}")


if __name__ == "__main__":
    main()
