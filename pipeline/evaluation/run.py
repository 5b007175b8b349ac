"""`ard evaluate`: every table of SPEC.md "Evaluation" on the held-out corpus, stored (eval_* tables) and
written as a report (report.md + figures)."""

from __future__ import annotations

import time

import pandas as pd

from .. import store
from ..activations import skipped_file, skipped_summary
from ..config import Config
from ..cpu_paths import cpu_paths
from ..sae import Sae
from .ablation import table4
from .context import EvalContext, seed_runs
from .diagnosis import clip_loudness, diagnosis
from .domains import domains
from .human import table2
from .probing import probing_table, unlearning_table
from .stability import stability
from .retrieval import probing_retrieval
from .table1 import names, retrieval, table1, table1_over_seeds, unit_sets


def run(ctx: EvalContext) -> dict[str, pd.DataFrame]:
    """Every table, each stored as soon as it is computed (a late failure keeps the ones before it), and the
    seconds each took in timings.json ("evaluate:<table>", with the inputs it was the first to need)."""
    from ..stages import StageLog

    tables: dict[str, pd.DataFrame] = {}
    timings, since = StageLog(ctx.cfg.work_dir), [time.perf_counter()]

    def keep(**finished: pd.DataFrame) -> None:
        with store.connect(ctx.cfg.db_path) as con:
            store.write_evaluation(con, finished)
        tables.update(finished)
        timings.timed(f"evaluate:{next(iter(finished))}", time.perf_counter() - since[0])
        since[0] = time.perf_counter()

    sae = Sae.load(ctx.cfg.sae_dir(ctx.layer, ctx.expansion))
    sets = unit_sets(ctx, sae)
    t1, sweep, per_feature, sure = table1(ctx, names(ctx, sets, sae))
    keep(table1=t1, gamma_sweep=sweep, feature_names=per_feature, table1_intervals=sure)
    loudness = clip_loudness(ctx.probing, ctx.cfg.corpus.sample_rate)
    with store.connect(ctx.cfg.db_path) as con:
        runs = store.runs(con)["run_id"].tolist()
        probing = probing_retrieval(con, runs, 1000, ctx.cfg.scoring.seed)
        diagnosed, diagnosed_features = diagnosis(con, runs, ctx.cfg.monosemanticity.max_position_eta2, loudness)
    keep(retrieval=pd.concat([retrieval(ctx, sets), probing], ignore_index=True), diagnosis=diagnosed,
         diagnosis_features=diagnosed_features)
    keep(table4=table4(ctx))
    seeds, seeds_dist, seeds_tokens = stability(ctx)
    keep(seed_stability=seeds, seed_stability_dist=seeds_dist, seed_stability_tokens=seeds_tokens)
    keep(table1_seeds=table1_over_seeds(ctx, t1, [(r["seed"], Sae.load(r["folder"])) for r in seed_runs(ctx)[1]]))
    keep(domains=domains(ctx))
    keep(probing=probing_table(ctx))
    curves, erasure = unlearning_table(ctx)
    keep(unlearning=erasure, unlearning_curves=curves)
    keep(table2=table2(ctx))
    gamma_cal, gamma_acc = ctx.gamma_calibrated
    keep(meta=pd.DataFrame([{"run_layer": ctx.layer, "expansion": ctx.expansion, "gamma": ctx.ev.gamma,
                             "gamma_calibrated": gamma_cal, "gamma_accuracy": gamma_acc,
                             "text_embedder": ctx.text_embedder.name, "top_c": ctx.ev.top_c,
                             "eval_corpus": str(ctx.cfg.resolve(ctx.ev.corpus)),
                             "eval_clips": len(ctx.evaluated), "corpus_clips": len(ctx.clips),
                             "left_out": len(ctx.left_out), "left_out_why": skipped_summary(ctx.left_out),
                             "left_out_list": str(skipped_file(ctx.work / "activations")),
                             "references": len(ctx.references),
                             "eval_sources": ", ".join(sorted({str(c.meta.get("source")) for c in ctx.evaluated})),
                             "cpu_paths": cpu_paths()}]))
    return tables


def evaluate(cfg: Config, model_loader) -> dict[str, pd.DataFrame]:
    """Compute every table, store them, write the report; stamped, so `evaluation_current` can tell later."""
    from ..report import write_report
    from ..stages import StageLog, evaluation_key

    with StageLog(cfg.work_dir).running("evaluate", evaluation_key(cfg)):
        tables = run(EvalContext(cfg, model_loader))
        write_report(with_steering(cfg, tables), cfg.resolve(cfg.evaluation.report_dir))
    return tables


def with_steering(cfg: Config, tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The tables the report is written from: these and `ard steer-eval`'s, which `evaluate` does not recompute.
    Read read-write, as everywhere in the evaluation: the explorer of `make demo` holds the file read-write in
    this process, and DuckDB refuses a read-only connection beside it."""
    from ..report import STEERING_TABLES

    with store.connect(cfg.db_path) as con:
        return {**store.read_evaluation(con, only=STEERING_TABLES), **tables}


def evaluation_current(cfg: Config) -> bool:
    """Whether the stored evaluation was computed from exactly these runs and settings (the explorer's
    background work skips it then; `ard evaluate` always recomputes)."""
    from ..stages import StageLog, evaluation_key

    return StageLog(cfg.work_dir).is_current("evaluate", evaluation_key(cfg))
