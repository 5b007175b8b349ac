"""What kind of thing a sound's label names, from WordNet 3.0 (the Debian package wordnet-base): "lark",
"blackbird" and "owl" are all birds, so four clips a describer called by four bird names share a
concept it can name. Reads WordNet's own database files (index.noun, data.noun, cntlist.rev); no
network, no model."""

from __future__ import annotations

import functools
import os
from pathlib import Path

WORDNET = Path("/usr/share/wordnet")  # Debian's; WordNet's own WNSEARCHDIR names another (Homebrew's, a copy)
MIN_TAGGED = 5  # a kind's word must be this common (SemCor tags in that sense): "bird" 29, "insect" 8; not "mammal" 3
MIN_DEPTH = 7  # kinds at least this deep: "bird" 9, "vehicle" 7; not "animal" 6, "device" 6, "object" 2
# WordNet's lexicographer files: a sound's word is an act (04), a communication (10: "howl") or an event
# (11: "meow", "growl"); what makes it an animal (05) or an artifact (06)
SOUND_FILES, MAKER_FILES = {"04", "10", "11"}, {"05", "06"}


class WordNet:
    """The noun hierarchy: each label's first (most frequent) sense and the kinds above it."""

    def __init__(self, root: str | Path | None = None):
        root = Path(root or os.environ.get("WNSEARCHDIR") or WORDNET)
        if not (root / "index.noun").is_file():
            raise FileNotFoundError(f"{root}: no WordNet database (index.noun): install the Debian package "
                                    "wordnet-base (`make setup` does), or set WNSEARCHDIR to a WordNet 3.0 dict folder")
        self.first: dict[str, int] = {}  # lemma -> offset of its first noun sense
        for line in (root / "index.noun").open(encoding="latin-1"):
            if line.startswith(" "):
                continue
            parts = line.split()
            p_cnt = int(parts[3])
            self.first[parts[0]] = int(parts[6 + p_cnt])
        self.lines: dict[int, str] = {}
        with (root / "data.noun").open(encoding="latin-1") as fh:
            for line in fh:
                if not line.startswith(" "):
                    self.lines[int(line[:8])] = line
        self.irregular = dict(line.split()[:2] for line in (root / "noun.exc").open(encoding="latin-1") if line.strip())
        self.tagged: dict[str, int] = {}  # sense key -> times it was tagged in the SemCor corpus
        for line in (root / "cntlist.rev").open(encoding="latin-1"):
            key, _, count = line.split()
            self.tagged[key] = int(count)

    def _synset(self, offset: int) -> tuple[list[tuple[str, int]], list[int]]:
        """(its lemmas, each with the times SemCor tagged it in this sense; its hypernyms' offsets)."""
        fields = self.lines[offset].split(" | ")[0].split()
        lex_file, n = fields[1], int(fields[3], 16)
        lemmas = [(fields[4 + 2 * i].split("(")[0].lower(), int(fields[5 + 2 * i], 16)) for i in range(n)]
        at = 4 + 2 * n
        ptrs = [fields[at + 1 + 4 * i : at + 5 + 4 * i] for i in range(int(fields[at]))]
        return ([(w, self.tagged.get(f"{w}%1:{lex_file}:{lex_id:02d}::", 0)) for w, lex_id in lemmas],
                [int(p[1]) for p in ptrs if p[0] in ("@", "@i") and p[2] == "n"])

    @functools.lru_cache(maxsize=None)
    def depth(self, offset: int) -> int:
        """Hypernym steps from `entity` (0) by the shortest path: "animal" 6, "bird" 9."""
        parents = self._synset(offset)[1]
        return 1 + min(map(self.depth, parents)) if parents else 0

    def noun(self, word: str) -> str | None:
        """The base form WordNet lists a noun under ("geese" -> "goose", "birds" -> "bird"), or None."""
        word = self.irregular.get(word, word)
        for base in (word, *(word[: -len(end)] + to for end, to in (("ies", "y"), ("es", ""), ("s", "")) if word.endswith(end))):
            if base in self.first:
                return base
        return None

    def _lexfile(self, word: str) -> str | None:
        return self.lines[self.first[word]][9:11] if word in self.first else None

    def maker(self, label: str) -> str | None:
        """What makes the sound a two-word label names by the thing and its sound: "wolf howl", "birds
        chirping", "car passing" -> "wolf", "bird", "car": the second word is a sound, an act or an event (or
        no noun WordNet knows) and the first an animal or an artifact ("male speech", "church organ",
        "wood chopping": no), specific enough to be a thing (deeper than MIN_DEPTH: not "male")."""
        words = label.lower().split()
        if len(words) != 2 or (head := self.noun(words[1])) and self._lexfile(head) not in SOUND_FILES:
            return None
        thing = self.noun(words[0])
        if not thing or self._lexfile(thing) not in MAKER_FILES or self.depth(self.first[thing]) <= MIN_DEPTH:
            return None  # "male", "female" (depth 7) are animals to WordNet, but name a voice, not a maker
        return thing.replace("_", " ")

    @functools.lru_cache(maxsize=None)
    def kinds(self, label: str) -> tuple[str, ...]:
        """What `label` is a kind of: what makes its sound (`maker`) and the kinds above that, else the kinds
        above the label itself (`hypernyms`): "birds chirping" -> ("bird",), "lark" -> ("bird",)."""
        maker = self.maker(label)
        return (maker, *self.hypernyms(maker)) if maker else self.hypernyms(label)

    @functools.lru_cache(maxsize=None)
    def hypernyms(self, label: str) -> tuple[str, ...]:
        """The words for what `label` is a kind of, nearest first: for each hypernym of its first (most
        frequent) noun sense, the lemma people use most, if they use it (SemCor tagged it at least MIN_TAGGED
        times in that sense: "bird", not "oscine" or "mammal"), down to MIN_DEPTH ("vehicle"; not "animal",
        "device", "object"). The compound itself is looked up, else its last words ("jazz electric guitar" ->
        "electric guitar"). Empty when WordNet does not know the word."""
        words = label.lower().split()
        offset = next((self.first[k] for i in range(len(words)) if (k := "_".join(words[i:])) in self.first), None)
        if offset is None:
            return ()
        out: list[str] = []
        seen, frontier = {offset}, [offset]
        while frontier:
            frontier = [p for off in frontier for p in self._synset(off)[1] if p not in seen and not seen.add(p)]
            for parent in frontier:
                if self.depth(parent) < MIN_DEPTH:
                    continue
                word, count = max(self._synset(parent)[0], key=lambda wc: wc[1])
                if count >= MIN_TAGGED and (word := word.replace("_", " ")) not in out:
                    out.append(word)
        return tuple(out)
