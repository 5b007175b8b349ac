"""Two or more models (or configs) side by side on the same measures, layer by layer, from their evaluated
databases (`ard run` + `ard evaluate` each): SAE fit, spliced WER, retrieval on the probing corpus, domain
specialisation, position and level diagnosis, top-k probing, and Table 1 on the held-out corpus.
    .venv/bin/python benchmarks/model_comparison.py data/demo/ard.duckdb data/demo_base/ard.duckdb
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def layer_rows(con, model: str) -> pd.DataFrame:
    """One row per run (layer): what each measure says of it."""
    runs = con.execute("SELECT run_id, layer FROM runs ORDER BY layer").df()
    metrics = con.execute("SELECT run_id, metric, value FROM sae_metrics").df().pivot(index="run_id", columns="metric",
                                                                                      values="value")
    retrieval = con.execute("SELECT * FROM eval_retrieval WHERE corpus = 'probing'").df().set_index("run")
    diagnosis = con.execute("SELECT * FROM eval_diagnosis").df().set_index("run")
    domains = con.execute("SELECT layer, domain, share FROM eval_domains").df().pivot(index="layer", columns="domain",
                                                                                     values="share")
    probing = con.execute("SELECT layer, task, k, accuracy FROM eval_probing WHERE units = 'SAE features'").df()
    rows = []
    for r in runs.itertuples(index=False):
        m, ret, diag = metrics.loc[r.run_id], retrieval.loc[r.run_id], diagnosis.loc[r.run_id]
        probe = probing[(probing.layer == r.layer) & (probing.task == "label")].set_index("k")["accuracy"]
        rows.append({"model": model, "layer": r.layer, "fvu": m.get("fvu"), "wer clean": m.get("wer_clean"),
                     "wer spliced": m.get("wer_spliced"), "H^k purity": ret.label_purity_H,
                     "x random": ret.label_ratio, "distinct labels": ret.distinct_majority_labels,
                     "domain purity": ret.domain_purity_H, "speech share": domains.loc[r.layer].get("speech"),
                     "position-driven": diag.position_driven, "level-driven": diag.selected_level_driven_share,
                     "label probe k=5": probe.get("k=5"), "label probe all": probe.get("all")})
    return pd.DataFrame(rows)


def table1_rows(con, model: str) -> pd.DataFrame:
    meta = con.execute("SELECT run_layer FROM eval_meta").fetchone()[0]
    t1 = con.execute("SELECT method, F1, F1_calibrated, name_label_sim, purity FROM eval_table1").df()
    held = con.execute("SELECT run, label_ratio, distinct_majority_labels FROM eval_retrieval "
                       "WHERE corpus = 'held-out'").df().rename(columns={"run": "method"})
    out = t1.merge(held, on="method", how="left")
    out.insert(0, "layer", meta)
    out.insert(0, "model", model)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("databases", nargs="+", type=Path)
    args = ap.parse_args()
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    layers, tables = [], []
    for db in args.databases:
        with duckdb.connect(str(db), read_only=True) as con:
            model = con.execute("SELECT model FROM runs LIMIT 1").fetchone()[0]
            layers.append(layer_rows(con, model))
            tables.append(table1_rows(con, model))
    print("Per layer (probing corpus; SAE of each run):")
    print(pd.concat(layers, ignore_index=True).round(3).to_string(index=False))
    print("\nTable 1 on the held-out corpus (each model's evaluation layer):")
    print(pd.concat(tables, ignore_index=True).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
