"""Invented names: words made of syllables, never repeated.

The demo world names its people and places with them, and the sae audit
uses them for made-up entities that no model can know ("Do I Know This
Entity?" contrasts known entities with such unknown ones).
"""

from __future__ import annotations

import random

ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
          "gr", "kr", "th", "sh", "st", "tr", "vr", "zh", "qu", "ph", "sk", "sl"]
VOWELS = ["a", "e", "i", "o", "u", "ae", "ei", "ou", "ia", "y"]
CODAS = ["", "", "n", "r", "l", "s", "th", "m", "x", "nd", "rk", "sk"]


class NameMaker:
    """Invented words from syllables, never repeating one already made."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int) -> str:
        while True:
            parts = [
                self.rng.choice(ONSETS) + self.rng.choice(VOWELS) + self.rng.choice(CODAS)
                for _ in range(syllables)
            ]
            word = "".join(parts).capitalize()
            if word not in self.used and 4 <= len(word) <= 12:
                self.used.add(word)
                return word

    def full_name(self) -> str:
        return f"{self.word(2)} {self.word(self.rng.choice([2, 3]))}"
