"""Synthetic multi-turn conversations for `experiment=sft_demo` (seeded: the same files every run).

Each conversation chains two tasks whose answers follow from the conversation or a small fixed table,
so that a small model trained from scratch can learn them: recall of facts the user stated earlier (name, city,
pet, colour of an object), single-digit arithmetic, and lookups (capitals). Some conversations open with a
system message. Writes lightning_llm/data/bundled/chat_{train,validation,test}.jsonl.

    python -m scripts.data.make_chat_data [--train 1200 --validation 200 --test 200 --seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "lightning_llm" / "data" / "bundled"
NAMES = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory", "Oscar"]
CITIES = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo", "Quito", "Dublin", "Madrid", "Vienna"]
PETS = ["cat", "dog", "parrot", "rabbit", "turtle", "hamster"]
COLOURS = ["red", "blue", "green", "yellow", "black", "white"]
OBJECTS = ["car", "bike", "hat", "bag", "lamp", "door"]
CAPITALS = {"France": "Paris", "Italy": "Rome", "Norway": "Oslo", "Peru": "Lima", "Egypt": "Cairo",
            "Japan": "Tokyo", "Ecuador": "Quito", "Ireland": "Dublin", "Spain": "Madrid", "Austria": "Vienna"}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SYSTEMS = ["You are a helpful assistant.", "Answer briefly.", "You are a friendly assistant. Be concise."]


def introduce(rng: random.Random) -> tuple[list[dict], list[tuple[str, str]]]:
    """A user states facts; returns the turns and (question, answer) pairs that can be asked later."""
    name, city, pet = rng.choice(NAMES), rng.choice(CITIES), rng.choice(PETS)
    turns = [{"role": "user", "content": f"Hi, I am {name}. I live in {city} and I have a {pet}."},
             {"role": "assistant", "content": f"Nice to meet you, {name}."}]
    facts = [("What is my name?", f"Your name is {name}."), ("Where do I live?", f"You live in {city}."),
             ("What pet do I have?", f"You have a {pet}.")]
    return turns, facts


def colours(rng: random.Random) -> tuple[list[dict], list[tuple[str, str]]]:
    a, b = rng.sample(OBJECTS, 2)
    ca, cb = rng.sample(COLOURS, 2)
    turns = [{"role": "user", "content": f"I have a {ca} {a} and a {cb} {b}."},
             {"role": "assistant", "content": "Noted."}]
    return turns, [(f"What colour is my {a}?", f"Your {a} is {ca}."), (f"What colour is my {b}?", f"Your {b} is {cb}.")]


def arithmetic(rng: random.Random) -> tuple[str, str]:
    x, y = rng.randrange(10), rng.randrange(10)
    if rng.random() < 0.5:
        return f"What is {x} plus {y}?", f"{x} plus {y} is {x + y}."
    x, y = max(x, y), min(x, y)
    return f"What is {x} minus {y}?", f"{x} minus {y} is {x - y}."


def lookup(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(sorted(CAPITALS))
    if rng.random() < 0.5:
        return f"What is the capital of {country}?", f"The capital of {country} is {CAPITALS[country]}."
    n = rng.randrange(10)
    return f"How do you write {n} in words?", f"{n} is written {NUMBERS[n]}."


def conversation(rng: random.Random) -> dict:
    messages = [{"role": "system", "content": rng.choice(SYSTEMS)}] if rng.random() < 0.3 else []
    questions: list[tuple[str, str]] = []
    turns, facts = rng.choice([introduce, colours])(rng)
    messages += turns
    questions += rng.sample(facts, 1)
    questions += [rng.choice([arithmetic, lookup])(rng)]
    rng.shuffle(questions)
    for question, answer in questions:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1200)
    parser.add_argument("--validation", type=int, default=200)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        rows = [conversation(rng) for _ in range(getattr(args, split))]
        path = args.out / f"chat_{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {len(rows)} conversations to {path}")


if __name__ == "__main__":
    main()
