"""Regenerate the small demo data bundled in lightning_llm/data/bundled/.

The text is synthetic: sentences assembled from hand-written phrase lists with a fixed seed, so the demos run
offline, carry no licence questions and are learnable in a minute on a laptop CPU while not being trivial
(classification needs negation and contrast clauses, the corpus has grammar and topic structure).

    python -m scripts.data.make_demo_data      # from the repository root; rewrites the bundled files
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "lightning_llm" / "data" / "bundled"

SUBJECTS = ["the movie", "this film", "the plot", "the acting", "the soundtrack", "the ending", "the script",
            "the director's work", "the cast", "the camera work", "this sequel", "the dialogue", "the pacing",
            "the story", "the lead actor", "the visual effects", "the opening scene", "the humour"]
POSITIVE = ["wonderful", "brilliant", "moving", "delightful", "superb", "charming", "gripping", "excellent",
            "beautiful", "clever", "memorable", "fresh", "powerful", "fun", "touching", "great"]
NEGATIVE = ["boring", "dull", "awful", "clumsy", "tedious", "weak", "predictable", "terrible", "flat",
            "forgettable", "messy", "painful", "lifeless", "silly", "poor", "bad"]
INTENSIFIERS = ["", "", "really ", "truly ", "quite ", "remarkably ", "somewhat ", "very "]
VERBS = ["is", "was", "felt", "seemed", "turned out"]
OPENERS = ["", "", "", "honestly, ", "to be fair, ", "overall, ", "in my opinion, ", "frankly, "]


def _clause(rng: random.Random, positive: bool) -> str:
    """A clause whose meaning is `positive`; a third of them say it through negation of the opposite word."""
    negate = rng.random() < 0.33
    words = (NEGATIVE if positive else POSITIVE) if negate else (POSITIVE if positive else NEGATIVE)
    verb = rng.choice(VERBS)
    neg = rng.choice(["not ", "never ", "hardly "]) if negate else ""
    if verb == "turned out":
        verb, neg = ("turned out " + neg.strip() + " to be").replace("  ", " "), ""
    return f"{rng.choice(SUBJECTS)} {verb} {neg}{rng.choice(INTENSIFIERS)}{rng.choice(words)}"


def review(rng: random.Random) -> tuple[str, str]:
    """One review and its label; contrast sentences ('X but Y') take the sentiment of the clause after 'but'."""
    positive = rng.random() < 0.5
    if rng.random() < 0.35:
        text = f"{_clause(rng, not positive)}, but {_clause(rng, positive)}"
    else:
        text = _clause(rng, positive)
        if rng.random() < 0.3:
            text += f" and {_clause(rng, positive)}"
    text = (rng.choice(OPENERS) + text).strip() + rng.choice([".", ".", "!"])
    return text[0].upper() + text[1:], "positive" if positive else "negative"


ANIMALS = ["cat", "dog", "fox", "owl", "horse", "rabbit", "crow", "mouse", "goat", "bear"]
PLACES = ["garden", "forest", "river", "village", "meadow", "barn", "hill", "market", "kitchen", "harbour"]
ADJS = ["small", "old", "quiet", "brown", "clever", "sleepy", "young", "grey", "hungry", "curious"]
ACTIONS = ["walked to", "ran across", "looked at", "slept near", "waited by", "sang in", "played in",
           "searched", "left", "returned to"]
TIMES = ["in the morning", "at night", "after the rain", "before dinner", "on sunday", "at noon"]
FOODS = ["bread", "apples", "cheese", "seeds", "fish", "berries", "carrots", "honey"]


def corpus_paragraph(rng: random.Random) -> str:
    """A few sentences about one animal: repeated entities make the text predictable from context."""
    animal, adj = rng.choice(ANIMALS), rng.choice(ADJS)
    sents = [f"the {adj} {animal} {rng.choice(ACTIONS)} the {rng.choice(PLACES)} {rng.choice(TIMES)}."]
    for _ in range(rng.randint(2, 5)):
        kind = rng.random()
        if kind < 0.35:
            sents.append(f"the {animal} {rng.choice(ACTIONS)} the {rng.choice(PLACES)}.")
        elif kind < 0.6:
            sents.append(f"it ate some {rng.choice(FOODS)} and {rng.choice(['rested', 'smiled', 'went home'])}.")
        elif kind < 0.8:
            other = rng.choice(ANIMALS)
            sents.append(f"then the {animal} met a {rng.choice(ADJS)} {other}, and the {other} said hello.")
        else:
            sents.append(f"the {animal} was {rng.choice(ADJS)} {rng.choice(TIMES)}.")
    return " ".join(s[0].upper() + s[1:] for s in sents)


def main() -> None:
    rng = random.Random(1234)
    OUT.mkdir(parents=True, exist_ok=True)
    for split, n in [("train", 3000), ("validation", 400), ("test", 400)]:
        with open(OUT / f"reviews_{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(review(rng) for _ in range(n))
    for split, n in [("train", 3000), ("validation", 250), ("test", 250)]:
        (OUT / f"corpus_{split}.txt").write_text("\n".join(corpus_paragraph(rng) for _ in range(n)) + "\n")


if __name__ == "__main__":
    main()
