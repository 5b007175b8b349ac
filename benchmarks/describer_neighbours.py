"""How many reference neighbours the offline describer should vote with: clip-level naming on the demo.

For each clip of a labelled corpus, the describer's reference votes (its k nearest references by the clip
embedder, never its own file or source, similarity-weighted as `naming.label_votes` weighs them); the top
label is its answer, scored by the MiniLM cosine with the clip's own label (the measure Table 1 uses for a
unit's name), by how well the answers tell clips of different labels apart (AUC, as Table 1's; a describer
that hedges toward vague labels gains cosine, not AUC) and by exact agreement. The probing corpus chooses k; the held-out corpus only reports it, so
the evaluation's labels do not tune the describer. A third row, "library, each source left out", names every
reference that is not a probing clip by the rest of the library (never its own source): how well the library
names a source it does not hold, which the probing corpus cannot tell for kinds of sound it does not have.
    .venv/bin/python benchmarks/describer_neighbours.py [--config configs/demo.toml] [--ks 1,2,3,5,10,20]
        [--by-label 15]
--by-label N prints, per corpus, the N labels the describer names worst at the config's k (their clips' mean
cosine and the answers it gave most): where a reference library lacks a kind of sound.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def reference_of(config_path: str):
    """(the config, its reference library, the clip embedder), or exit saying the library is missing."""
    from pipeline.config import load_config
    from pipeline.namers import reference_library

    config = load_config(config_path)
    library, embedder = reference_library(config)
    if library is None:
        raise SystemExit(f"{config_path}: [naming] reference is empty: nothing to vote with")
    return config, library, embedder


def labelled_corpora(config) -> dict[str, Path]:
    """The corpora a describer is measured on: the probing corpus chooses, the held-out one only reports."""
    corpora = {"probing (chooses)": config.resolve(config.corpus.root)}
    if config.evaluation.corpus:
        corpora["held-out (reported only)"] = config.resolve(config.evaluation.corpus)
    return corpora


def read_labelled(root: Path):
    from pipeline.corpus import read_metadata

    return [c for c in read_metadata(root) if c.label]


def clip_vectors(config, root: Path, embedder, library=None):
    """(clips, [n, dim] vectors) of a labelled audiofolder: a clip's vector from the library where it is a
    reference (the probing corpus is one: embedded with the same embedder), else from the store (the store keys
    embeddings by clip id, which only the probing corpus's clips share), else embedded here."""
    from pipeline import store
    from pipeline.audio import read_audio

    clips = read_labelled(root)
    have = {}
    if library is not None:
        row = {p: i for i, p in enumerate(library.paths)}
        have = {c.id: library.vectors[row[str(c.path.resolve())]] for c in clips if str(c.path.resolve()) in row}
    if root == config.resolve(config.corpus.root) and config.db_path.is_file() and len(have) < len(clips):
        with store.connect(config.db_path, read_only=True) as con:
            have = {**store.read_embeddings(con, embedder.name, [c.id for c in clips if c.id not in have]), **have}
    todo = [c for c in clips if c.id not in have]
    if todo:
        got = embedder.embed([read_audio(c.path, config.corpus.sample_rate) for c in todo], config.corpus.sample_rate)
        have.update({c.id: v for c, v in zip(todo, got)})
    return clips, np.stack([have[c.id] for c in clips])


def library_clips(config, library):
    """(clips, vectors) of the library's own references that are not probing clips (the probing corpus
    already has its row), each with its source, so `answers` leaves that source out of its neighbours."""
    from pipeline.corpus import Clip

    probing = {str(c.path.resolve()) for c in read_labelled(config.resolve(config.corpus.root))}
    rows = [i for i, p in enumerate(library.paths) if str(p) not in probing]
    clips = [Clip(id=str(library.paths[i]), path=Path(str(library.paths[i])), label=str(library.labels[i]),
                  meta={"source": str(library.sources[i])}) for i in rows]
    return clips, library.vectors[rows]


def answers(clips, vectors, library, text, ks: list[int]) -> dict[int, tuple[list[str], np.ndarray, np.ndarray]]:
    """Per k: each clip's top voted label (never from its own file or source), its MiniLM cosine with the
    clip's label, and how well it tells the clip apart from clips of other labels (`names_tell_apart`)."""
    from pipeline.evaluation.matching import names_tell_apart
    from pipeline.naming import label_votes
    from pipeline.reference import Origin

    origins = [Origin(str(c.path.resolve()), c.meta.get("source")) for c in clips]
    near = library.neighbours(vectors, origins, max(ks))
    labels = [c.label for c in clips]
    truth, out = text.embed(labels), {}
    for k in ks:
        top = [label_votes(n[:k])[0][0] for n in near]
        named = text.embed(top)
        out[k] = (top, np.sum(named * truth, axis=1), names_tell_apart(named, truth, labels))
    return out


def scores(clips, given: dict[int, tuple[list[str], np.ndarray, np.ndarray]]) -> list[dict]:
    """Per k: mean cosine of the top voted label with the clip's label, its AUC (a vague answer gains cosine,
    not AUC), and the exact-match share."""
    return [{"k": k, "label_cosine": float(sims.mean()), "AUC": float(np.nanmean(apart)),
             "exact": float(np.mean([t == c.label for t, c in zip(top, clips)]))} for k, (top, sims, apart) in given.items()]


def worst_labels(clips, top: list[str], sims: np.ndarray, n: int) -> list[str]:
    """The n labels whose clips the describer names worst: mean cosine, clips, label, its commonest answers."""
    from collections import Counter, defaultdict

    by = defaultdict(list)
    for c, t, s in zip(clips, top, sims):
        by[c.label].append((float(s), t))
    rows = sorted(by.items(), key=lambda kv: (np.mean([s for s, _ in kv[1]]), kv[0]))[:n]
    return [f"{np.mean([s for s, _ in v]):.2f} {len(v):3d}  {label:28s} <- "
            + ", ".join(f"{t} x{k}" for t, k in Counter(t for _, t in v).most_common(3)) for label, v in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "demo.toml"))
    ap.add_argument("--ks", default="1,2,3,5,10,20")
    ap.add_argument("--by-label", type=int, default=0, metavar="N", help="print the N worst-named labels per corpus")
    args = ap.parse_args()
    import pandas as pd

    from pipeline.embedding import TextEmbedder

    config, library, embedder = reference_of(args.config)
    text, ks = TextEmbedder("minilm"), [int(k) for k in args.ks.split(",")]
    table, worst = [], {}
    k_used = config.naming.neighbours
    corpora = {name: clip_vectors(config, root, embedder, library) for name, root in labelled_corpora(config).items()}
    corpora["library, each source left out (reported only)"] = library_clips(config, library)
    for name, (clips, vectors) in corpora.items():
        given = answers(clips, vectors, library, text, sorted(set(ks) | ({k_used} if args.by_label else set())))
        table += [{"corpus": name, "clips": len(clips), **row} for row in scores(clips, given) if row["k"] in ks]
        if args.by_label:
            worst[name] = worst_labels(clips, *given[k_used][:2], args.by_label)
    frame = pd.DataFrame(table)
    print(frame.round(3).to_string(index=False))
    probing = frame[frame.corpus.str.startswith("probing")]
    best = probing.loc[probing.label_cosine.idxmax()]
    print(f"\nbest k on the probing corpus: {int(best.k)} (label cosine {best.label_cosine:.3f}); "
          f"the config's [naming] neighbours: {config.naming.neighbours}")
    for name, lines in worst.items():
        print(f"\n{name}: the {len(lines)} labels named worst at k {k_used} (mean cosine, clips, label <- answers)")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
