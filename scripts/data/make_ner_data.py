"""Regenerate the NER demo data bundled in lightning_llm/data/bundled/ (ner_{train,validation,test}.jsonl).

Synthetic, like the reviews (scripts/data/make_demo_data.py): sentences from hand-written templates filled with
person, place and organisation names (fixed seed), one JSON object per line with `tokens` (words) and `tags`
(IOB2: B-PER, I-PER, B-LOC, I-LOC, B-ORG, I-ORG, O). Not trivial: entities span one to three words, a few names
are ambiguous (Jordan, Washington, Victoria, Lincoln are people, places or part of organisations) and only the
context decides; names are drawn anew for every slot, so most validation/test sentences are combinations the
training split never saw.

    python -m scripts.data.make_ner_data      # from the repository root; rewrites the bundled files
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "lightning_llm" / "data" / "bundled"

FIRST = ["Anna", "Peter", "Maria", "John", "Sofia", "Lukas", "Emma", "David", "Laura", "Omar", "Chen", "Priya",
         "Elena", "Marco", "Fatima", "Kenji", "Olivia", "Hugo", "Amara", "Ivan", "Nora", "Diego", "Yuki", "Samuel"]
LAST = ["Schmidt", "Rossi", "Garcia", "Smith", "Novak", "Tanaka", "Okafor", "Dubois", "Kowalski", "Silva",
        "Andersen", "Patel", "Moreau", "Fischer", "Haddad", "Ivanova", "Murphy", "Costa", "Lindqvist", "Wright"]
PLACES = ["Berlin", "Paris", "Lagos", "Tokyo", "Lima", "Oslo", "Cairo", "Madrid", "Toronto", "Nairobi", "Vienna",
          "Hanoi", "Dublin", "Quito", "Sydney", "Prague", "Mumbai", "Lisbon", "New York", "Buenos Aires",
          "Cape Town", "Hong Kong", "Rio de Janeiro", "San Francisco", "Kuala Lumpur"]
ORGS = ["Acme Corp", "Globex", "Initech", "Umbrella Group", "Stark Industries", "Wayne Enterprises", "Hooli",
        "Vandelay Industries", "Nordic Rail", "Blue Harbor Bank", "the United Nations", "Red Cross",
        "Pacific Airlines", "Green Valley Farms", "Orion Labs", "City Hospital", "Delta Motors", "Apex Media",
        "the World Bank", "Sunrise Energy"]
# Names whose type only the context gives: each appears as a person, a place and inside an organisation.
AMBIGUOUS = ["Jordan", "Washington", "Victoria", "Lincoln", "Florence", "Austin"]
ORG_SUFFIX = ["Bank", "University", "Group", "Telecom"]

# {PER}, {LOC}, {ORG}: slots; everything else is an O word. Lower-case and sentence-initial variants both occur.
TEMPLATES = [
    "{PER} lives in {LOC} .",
    "{PER} works for {ORG} in {LOC} .",
    "{ORG} opened a new office in {LOC} last week .",
    "yesterday {PER} met {PER} at the {ORG} headquarters .",
    "the mayor of {LOC} thanked {PER} for the donation .",
    "{PER} , a spokesperson for {ORG} , declined to comment .",
    "shares of {ORG} rose after the deal with {ORG} .",
    "{PER} flew from {LOC} to {LOC} on monday .",
    "according to {PER} , {ORG} will hire two hundred people .",
    "the conference in {LOC} was sponsored by {ORG} .",
    "{PER} joined {ORG} as chief engineer .",
    "heavy rain closed the roads around {LOC} .",
    "we visited {LOC} and {LOC} in the summer .",
    "{ORG} announced that {PER} will lead the team .",
    "the report by {ORG} praised the schools of {LOC} .",
    "{PER} and {PER} wrote the book together .",
    "prices in {LOC} fell for the third month .",
    "nobody expected the storm to reach the coast .",
    "the new train connects {LOC} with {LOC} .",
    "{PER} said the weather was cold .",
    "after the match , {PER} thanked the fans in {LOC} .",
    "{ORG} signed a contract with the government of {LOC} .",
]


def _person(rng: random.Random) -> list[str]:
    first = rng.choice(AMBIGUOUS) if rng.random() < 0.12 else rng.choice(FIRST)
    kind = rng.random()
    if kind < 0.5:
        return [first, rng.choice(LAST)]
    if kind < 0.7:
        return [rng.choice(LAST)] if rng.random() < 0.5 else [first]
    return ["Dr.", rng.choice(LAST)] if rng.random() < 0.3 else [first, rng.choice(FIRST), rng.choice(LAST)]


def _place(rng: random.Random) -> list[str]:
    return [rng.choice(AMBIGUOUS)] if rng.random() < 0.12 else rng.choice(PLACES).split()


def _org(rng: random.Random) -> list[str]:
    if rng.random() < 0.15:
        return [rng.choice(AMBIGUOUS), rng.choice(ORG_SUFFIX)]
    words = rng.choice(ORGS).split()
    return words[1:] if words[0] == "the" else words  # "the" stays outside the entity


def sentence(rng: random.Random, templates: list[str]) -> tuple[list[str], list[str]]:
    """One sentence: template words tagged O, slot fillers tagged B-/I- of their type."""
    tokens, tags = [], []
    for word in rng.choice(templates).split():
        if word in ("{PER}", "{LOC}", "{ORG}"):
            kind = word[1:-1]
            entity = {"PER": _person, "LOC": _place, "ORG": _org}[kind](rng)
            if kind == "ORG" and tokens and tokens[-1] != "the" and rng.random() < 0.3:
                tokens.append("the")
                tags.append("O")
            tokens += entity
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(entity) - 1)
        else:
            tokens.append(word)
            tags.append("O")
    if rng.random() < 0.5:
        tokens[0] = tokens[0][0].upper() + tokens[0][1:]
    return tokens, tags


def main() -> None:
    rng = random.Random(2024)
    OUT.mkdir(parents=True, exist_ok=True)
    for split, n in [("train", 1500), ("validation", 200), ("test", 200)]:
        with open(OUT / f"ner_{split}.jsonl", "w") as f:
            for _ in range(n):
                tokens, tags = sentence(rng, TEMPLATES)
                f.write(json.dumps({"tokens": tokens, "tags": tags}) + "\n")


if __name__ == "__main__":
    main()
