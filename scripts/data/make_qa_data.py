"""Regenerate the extractive-QA demo data bundled in lightning_llm/data/bundled/ (qa_{train,validation,test}.jsonl).

Synthetic, like the reviews and the NER sentences: short templated biographies of invented people (birth place
and date, studies, employer, job, a move, a relative), with filler sentences in between, and questions whose
answers are spans of the paragraph. One JSON object per line in SQuAD's flat layout: `id`, `question`,
`context`, `answers` = {"text": [...], "answer_start": [...]}. Not trivial: every paragraph also describes a
relative (born elsewhere, on another date, working elsewhere), so the question's name decides which of two
places/dates/employers is meant (a fifth of the questions are about the relative); names are drawn anew for every
paragraph. Filler sentences make some contexts longer than one 128-token window (with qa_demo's 2000-piece
WordPiece tokenizer: 1580 windows for the 1500 training questions), so their answers are found across doc-stride
windows.

    python -m scripts.data.make_qa_data      # from the repository root; rewrites the bundled files
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "lightning_llm" / "data" / "bundled"

FIRST = ["Anna", "Peter", "Maria", "John", "Sofia", "Lukas", "Emma", "David", "Laura", "Omar", "Chen", "Priya",
         "Elena", "Marco", "Fatima", "Kenji", "Olivia", "Hugo", "Amara", "Ivan", "Nora", "Diego", "Yuki", "Samuel",
         "Tomas", "Leila", "Rafael", "Ingrid", "Kwame", "Mei"]
LAST = ["Schmidt", "Rossi", "Garcia", "Smith", "Novak", "Tanaka", "Okafor", "Dubois", "Kowalski", "Silva",
        "Andersen", "Patel", "Moreau", "Fischer", "Haddad", "Ivanova", "Murphy", "Costa", "Lindqvist", "Wright",
        "Mensah", "Horvat", "Nakamura", "Oyelaran", "Petrov"]
PLACES = ["Berlin", "Paris", "Lagos", "Tokyo", "Lima", "Oslo", "Cairo", "Madrid", "Toronto", "Nairobi", "Vienna",
          "Hanoi", "Dublin", "Quito", "Sydney", "Prague", "Mumbai", "Lisbon", "New York", "Buenos Aires",
          "Cape Town", "Hong Kong", "Rio de Janeiro", "San Francisco", "Kuala Lumpur", "Accra", "Helsinki"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
SUBJECTS = ["physics", "history", "marine biology", "economics", "civil engineering", "music", "medicine",
            "philosophy", "computer science", "architecture", "chemistry", "linguistics"]
COMPANIES = ["Acme Corp", "Globex", "Initech", "Umbrella Group", "Stark Industries", "Hooli", "Nordic Rail",
             "Blue Harbor Bank", "Pacific Airlines", "Green Valley Farms", "Orion Labs", "City Hospital",
             "Delta Motors", "Apex Media", "Sunrise Energy", "Vandelay Industries"]
JOBS = ["software engineer", "nurse", "pilot", "accountant", "chief designer", "research scientist", "teacher",
        "lawyer", "journalist", "project manager", "chef", "translator"]
RELATIVES = ["sister", "brother", "cousin", "friend"]
FILLERS = ["The weather that year was unusually mild .", "Many people in the region still remember the festival .",
           "Local newspapers wrote about the new bridge for weeks .", "Prices for bread and milk rose slowly .",
           "The old library was renovated with money from the city .", "Trains were often late in the winter .",
           "A small museum opened near the harbour .", "Football remained the most popular sport in town .",
           "Several families moved to the suburbs during that decade .", "The river flooded twice in the spring .",
           "Schools in the area introduced a second foreign language .", "A new road connected the two valleys ."]


def _date(rng: random.Random) -> str:
    return f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(1940, 2005)}"


def _person(rng: random.Random, taken: set[str]) -> dict[str, str]:
    while True:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        if first not in taken and last not in taken:
            break
    taken |= {first, last}
    return {"first": first, "last": last, "name": f"{first} {last}", "born_in": rng.choice(PLACES),
            "born_on": _date(rng), "subject": rng.choice(SUBJECTS), "company": rng.choice(COMPANIES),
            "job": rng.choice(JOBS), "moved_to": rng.choice(PLACES), "year": str(rng.randint(1970, 2020))}


class Paragraph:
    """Builds a context sentence by sentence and remembers where each answer slot starts."""

    def __init__(self) -> None:
        self.text = ""
        self.spans: dict[tuple[str, str], tuple[str, int]] = {}

    def add(self, template: str, who: str | None = None, **slots: str) -> None:
        """`template` with {slot} placeholders; every slot is recorded as an answer of (who, slot)."""
        if self.text:
            self.text += " "
        rest = template
        while "{" in rest:
            head, _, tail = rest.partition("{")
            slot, _, rest = tail.partition("}")
            self.text += head
            if who is not None and slot != "name":
                self.spans[(who, slot)] = (slots[slot], len(self.text))
            self.text += slots[slot]
        self.text += rest


QUESTIONS = {"born_in": ["Where was {name} born ?", "In which city was {name} born ?"],
             "born_on": ["When was {name} born ?", "On what date was {name} born ?"],
             "subject": ["What did {name} study ?", "Which subject did {name} study ?"],
             "company": ["Which company did {name} work for ?", "Who employed {name} ?"],
             "job": ["What was the job of {name} ?", "What did {name} work as ?"],
             "moved_to": ["Where did {name} move to ?", "To which city did {name} move ?"],
             "year": ["In which year did {name} move ?", "When did {name} move ?"]}


def paragraph(rng: random.Random) -> tuple[str, list[tuple[str, str, int]]]:
    """A context and its (question, answer text, answer_start) triples."""
    taken: set[str] = set()
    main, other = _person(rng, taken), _person(rng, taken)
    relation = rng.choice(RELATIVES)
    p = Paragraph()

    def fillers(k: int) -> None:
        for sentence in rng.sample(FILLERS, k):
            p.add(sentence)

    p.add("{name} was born in {born_in} on {born_on} .", "main", **main)
    fillers(rng.choice([0, 0, 0, 1]))
    p.add(f"{main['first']} studied {{subject}} and later worked as a {{job}} for {{company}} .", "main", **main)
    fillers(rng.choice([0, 0, 0, 1]))
    p.add(f"In {{year}} {main['last']} moved to {{moved_to}} .", "main", **main)
    fillers(rng.choice([0, 0, 1, 4]))
    p.add(f"{main['first']} has a {relation} , {{name}} , who was born in {{born_in}} on {{born_on}} .", "other",
          **other)
    fillers(rng.choice([0, 0, 0, 2]))
    p.add(f"{other['first']} studied {{subject}} and works as a {{job}} for {{company}} in {{moved_to}} .",
          "other", **other)
    qas = []
    # Most questions are about the paragraph's main person, one in five about the relative.
    asked = [("other", other) if rng.random() < 0.2 else ("main", main) for _ in range(3)]
    for who, person in asked:
        slot = rng.choice([s for s in QUESTIONS if (who, s) in p.spans])
        name = person["name"] if rng.random() < 0.7 else person["first"]
        text, start = p.spans[(who, slot)]
        assert p.text[start:start + len(text)] == text
        qas.append((rng.choice(QUESTIONS[slot]).format(name=name), text, start))
    # Distinct questions only (two draws for the main person may coincide).
    unique = {q: (q, t, s) for q, t, s in qas}
    return p.text, list(unique.values())


def main() -> None:
    rng = random.Random(2025)
    OUT.mkdir(parents=True, exist_ok=True)
    for split, n in [("train", 1500), ("validation", 200), ("test", 200)]:
        rows = []
        while len(rows) < n:
            context, qas = paragraph(rng)
            for question, text, start in qas[:n - len(rows)]:
                rows.append({"id": f"{split}-{len(rows)}", "question": question, "context": context,
                             "answers": {"text": [text], "answer_start": [start]}})
        with open(OUT / f"qa_{split}.jsonl", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)


if __name__ == "__main__":
    main()
