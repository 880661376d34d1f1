"""Regenerate the seq2seq demo data bundled in lightning_llm/data/bundled/ (fixed seed, deterministic):

- `translation_{train,validation,test}.jsonl`: English template sentences -> a rule-based pseudo-language
  ("Zeltic"). Every word has one fixed Zeltic word (a made-up lexicon), and the word order changes: noun phrases
  read noun-adjective-article, a prepositional phrase becomes a postpositional one moved to the front, and the
  verb goes last (subject-object-verb). So a model has to learn a lexicon and a reordering; copying the source
  scores next to nothing.
- `summarization_{train,validation,test}.jsonl`: short "news" texts of three to five sentences, one of which says
  who did what where (a person, a past-tense verb, an object, a place); the others are filler. The summary is that
  key sentence, at a random position, so the lead-1 baseline (first sentence) is right about a quarter of the time.

Both are JSON lines with `source` and `target` (the defaults of `data=seq2seq`).

    python -m scripts.data.make_seq2seq_data      # from the repository root; rewrites the bundled files
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "lightning_llm" / "data" / "bundled"
SEED = 13

NOUNS = ["dog", "cat", "bird", "horse", "farmer", "teacher", "child", "king", "queen", "baker", "fish", "wolf",
         "doctor", "sailor", "goat", "fox", "painter", "student", "mouse", "bear"]
ADJECTIVES = ["big", "small", "old", "young", "red", "happy", "tired", "clever", "brave", "quiet", "green", "angry"]
VERBS = ["sees", "follows", "helps", "finds", "loves", "calls", "feeds", "watches", "meets", "paints", "hears",
         "chases"]
PLACES = ["garden", "house", "forest", "river", "market", "village", "castle", "field"]
PREPOSITIONS = ["in", "near", "behind"]
ARTICLES = ["the", "a"]


def _lexicon(rng: random.Random) -> dict[str, str]:
    """One distinct made-up word per English word (consonant-vowel syllables)."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    words = NOUNS + ADJECTIVES + VERBS + PLACES + PREPOSITIONS + ARTICLES
    out, used = {}, set()
    for word in words:
        while True:
            syllables = rng.randint(1, 3) if word not in ARTICLES + PREPOSITIONS else 1
            made = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables))
            made += rng.choice(["", "n", "r", "s"]) if word in VERBS else ""
            if made not in used:
                used.add(made)
                out[word] = made
                break
    return out


def _np(rng: random.Random) -> tuple[list[str], list[str]]:
    """An English noun phrase and its parts (article, adjective or '', noun)."""
    article, noun = rng.choice(ARTICLES), rng.choice(NOUNS)
    adjective = rng.choice(ADJECTIVES) if rng.random() < 0.6 else ""
    return [w for w in (article, adjective, noun) if w], [article, adjective, noun]


def _zeltic_np(parts: list[str], lex: dict[str, str]) -> list[str]:
    article, adjective, noun = parts
    return [lex[noun]] + ([lex[adjective]] if adjective else []) + [lex[article]]


def translation_pair(rng: random.Random, lex: dict[str, str]) -> dict[str, str]:
    subject, subject_parts = _np(rng)
    obj, obj_parts = _np(rng)
    verb = rng.choice(VERBS)
    english = subject + [verb] + obj
    zeltic = _zeltic_np(subject_parts, lex) + _zeltic_np(obj_parts, lex) + [lex[verb]]
    if rng.random() < 0.5:
        prep, article, place = rng.choice(PREPOSITIONS), rng.choice(ARTICLES), rng.choice(PLACES)
        english += [prep, article, place]
        zeltic = [lex[place], lex[article], lex[prep]] + zeltic
    return {"source": " ".join(english) + " .", "target": " ".join(zeltic) + " ."}


PEOPLE = ["Anna", "Peter", "Maria", "John", "Sofia", "Lukas", "Emma", "David", "Laura", "Omar", "Chen", "Priya",
          "Elena", "Marco", "Fatima", "Kenji", "Olivia", "Hugo", "Amara", "Ivan"]
TOWNS = ["Berlin", "Paris", "Lagos", "Tokyo", "Lima", "Oslo", "Cairo", "Madrid", "Toronto", "Nairobi", "Vienna",
         "Hanoi", "Dublin", "Quito", "Sydney", "Prague"]
DEEDS = ["opened", "repaired", "sold", "painted", "visited", "bought", "cleaned", "closed", "built", "found"]
THINGS = ["bakery", "bridge", "museum", "library", "school", "boat", "shop", "garden", "station", "theatre",
          "hotel", "factory"]
WHEN = ["on monday", "last week", "yesterday", "in the morning", "after lunch"]
FILLER = ["the weather was {adj} all day .", "many people came to watch .", "it was a {adj} afternoon .",
          "nobody expected such a crowd .", "the streets were {adj} and busy .", "some visitors took photos .",
          "a band played music near the square .", "the local newspaper wrote about it .",
          "children ran around the {thing} .", "the mood in town was {adj} ."]
FILLER_ADJ = ["cold", "warm", "quiet", "loud", "sunny", "grey", "calm", "cheerful"]


def summarization_pair(rng: random.Random) -> dict[str, str]:
    key = f"{rng.choice(PEOPLE)} {rng.choice(DEEDS)} the {rng.choice(THINGS)} in {rng.choice(TOWNS)} " \
          f"{rng.choice(WHEN)} ."
    fillers = [f.format(adj=rng.choice(FILLER_ADJ), thing=rng.choice(THINGS))
               for f in rng.sample(FILLER, rng.randint(2, 4))]
    fillers.insert(rng.randrange(len(fillers) + 1), key)
    return {"source": " ".join(fillers), "target": key}


def _write(name: str, rows: list[dict[str, str]]) -> None:
    path = OUT / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"{path}: {len(rows)} rows")


def main() -> None:
    rng = random.Random(SEED)
    lex = _lexicon(rng)
    sizes = {"train": 3000, "validation": 200, "test": 200}
    for split, n in sizes.items():
        _write(f"translation_{split}.jsonl", [translation_pair(rng, lex) for _ in range(n)])
    sizes = {"train": 2000, "validation": 200, "test": 200}
    for split, n in sizes.items():
        _write(f"summarization_{split}.jsonl", [summarization_pair(rng) for _ in range(n)])


if __name__ == "__main__":
    main()
