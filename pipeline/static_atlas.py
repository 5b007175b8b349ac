"""A shareable concept atlas: the named features of every run as a static site that opens from disk or any
static host, no server and no network: `ard export atlas CONFIG OUT/`.

    OUT/index.html               the concept list with search, and the map of every run's features
    OUT/data.js                  the list as a script (a page opened from file:// may not fetch JSON)
    OUT/features/<run>/<k>.html  one page a feature: name, provenance, H^k / L^k clips with players,
                                 activation timelines, MS, and under each H^k clip where and on which
                                 words it fires (the frame-level evidence)
    OUT/clips/<id>.ogg           each representative clip once, Ogg Vorbis at the model's rate (small)
"""

from __future__ import annotations

import hashlib
import html
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from . import store
from .config import Config
from .corpus import clip_audio, read_metadata
from .evidence import Evidence, sentence

DOMAIN_COLOURS = {"speech": "#1f77b4", "music": "#d62728", "sound": "#2ca02c"}
STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px;color:#222}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;
font-size:14px}th{background:#f4f4f4}a{color:#0645ad}input{font-size:16px;padding:4px;width:40%}
.clip{display:flex;gap:1em;align-items:center;margin:4px 0}.muted{color:#777;font-size:13px}svg{background:#fafafa}"""


def export_atlas(cfg: Config, out: str | Path, quality: float = 0.1) -> dict:
    """Write the site; returns {"features", "clips", "bytes"}. The folder is replaced whole (written beside it
    first, so a failed export leaves the last good one)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "clips").mkdir(parents=True)
    by_id = {c.id: c for c in read_metadata(cfg.resolve(cfg.corpus.root))}
    with store.connect(cfg.db_path, read_only=True) as con:
        runs = store.runs(con)
        concepts = store.concepts(con)
        clip_files: dict[str, str] = {}
        for run in runs.itertuples():
            for row in tqdm(concepts[concepts["run_id"] == run.run_id].itertuples(), desc=f"atlas {run.run_id}",
                            unit="feature"):
                reps = store.representatives(con, run.run_id, int(row.feature))
                lines = store.timelines(con, run.run_id, int(row.feature))
                found = store.evidence(con, run.run_id, int(row.feature))
                for clip_id in reps["clip_id"]:
                    if clip_id not in clip_files:
                        clip_files[clip_id] = _write_clip(tmp / "clips", clip_id, by_id, cfg, quality)
                page = tmp / "features" / run.run_id / f"{int(row.feature)}.html"
                page.parent.mkdir(parents=True, exist_ok=True)
                page.write_text(_feature_page(run, row, reps, lines, clip_files, found), encoding="utf-8")
        maps = {run.run_id: store.feature_map(con, run.run_id) for run in runs.itertuples()}
    listed = concepts.assign(page=[f"features/{r.run_id}/{int(r.feature)}.html" for r in concepts.itertuples()])
    data = {"concepts": json.loads(listed[["run_id", "layer", "feature", "name", "fires_on", "description", "ms",
                                           "frequency", "domains", "page"]].to_json(orient="records"))}
    (tmp / "data.js").write_text("window.ATLAS = " + json.dumps(data) + ";\n", encoding="utf-8")
    (tmp / "index.html").write_text(_index_page(runs, maps, set(zip(concepts["run_id"], concepts["feature"]))),
                                    encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return {"features": len(concepts), "clips": len(clip_files), "bytes": size}


def _write_clip(folder: Path, clip_id: str, by_id: dict, cfg: Config, quality: float) -> str:
    """One representative clip as Ogg Vorbis (quality 0.1: ~3 KB a second of 16 kHz mono); its file name."""
    name = hashlib.sha256(clip_id.encode()).hexdigest()[:16] + ".ogg"
    audio = clip_audio(by_id, clip_id, cfg.corpus)
    sf.write(folder / name, audio, cfg.corpus.sample_rate, format="OGG", subtype="VORBIS", compression_level=1 - quality)
    return name


def _sparkline(values: np.ndarray, width: int = 300, height: int = 36) -> str:
    """An activation timeline as an inline SVG polyline (0 at the bottom, the clip's maximum at the top)."""
    if len(values) < 2:
        return ""
    top = float(values.max()) or 1.0
    xs = np.linspace(0, width, len(values))
    ys = height - 2 - (height - 4) * np.clip(values / top, 0, 1)
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="activation over time">'
            f'<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="{points}"/></svg>')


def _evidence_line(found: dict | None) -> str:
    """Where in the clip the feature fires, on which words (and their IPA), how it sounds there: as on the
    explorer's Feature page."""
    if not found:
        return ""
    evidence = Evidence(tuple(found["span"]), tuple(tuple(w) for w in found["words"]), found["ipa"] or "",
                        tuple(t for t in (found["how"] or "").split(", ") if t))
    return f'<br><span class="evidence">{html.escape(sentence(evidence))}</span>'


def _feature_page(run, row, reps: pd.DataFrame, lines: dict, clip_files: dict, found: dict | None = None) -> str:
    e = html.escape
    title = row.name if isinstance(row.name, str) and row.name else "(unnamed)"
    facts = [("run", run.run_id), ("model", run.model), ("layer", run.layer), ("SAE", f"{run.kind}, K {run.k}, e {run.expansion}"),
             ("SAE file hash", run.sae_hash), ("monosemanticity (MS)", f"{row.ms:.3f} (rank {row.ms_rank})"),
             ("frequency", f"{100 * row.frequency:.2f} % of tokens"), ("max activation", f"{row.max_act:.3g}"),
             ("clips it fires on", int(row.n_clips))]
    if isinstance(getattr(row, "fires_on", None), str):
        facts.append(("word it fires on (top clips)", row.fires_on))
    parts = [f"<!doctype html><meta charset=utf-8><title>{e(title)} · #{int(row.feature)}</title><style>{STYLE}</style>",
             '<p><a href="../../index.html">← all concepts</a></p>',
             f'<h1 id="feature-title">#{int(row.feature)} {e(title)}</h1>',
             f"<p>{e(row.description or '')}</p><table>"]
    parts += [f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in facts]
    parts.append("</table>")
    for kind, heading in (("H", "Most representative clips (H^k, highest r = mu x c)"),
                          ("L", "Least representative clips (L^k)")):
        parts.append(f"<h2>{heading}</h2>")
        for rep in reps[reps["kind"] == kind].itertuples():
            label = " · ".join(str(v) for v in (rep.label, rep.domain) if isinstance(v, str) and v)
            parts.append(f'<div class="clip"><audio controls preload="metadata" src="../../clips/{clip_files[rep.clip_id]}">'
                         f'</audio><div>{e(label)}<br><span class="muted">{e(rep.clip_id)} · r {rep.r:.3g}, '
                         f'mu {rep.mu:.3g}, c {rep.c:.2f}</span>'
                         f'{_evidence_line((found or {}).get(rep.clip_id) if kind == "H" else None)}</div>'
                         f'{_sparkline(lines.get(rep.clip_id, np.zeros(0)))}</div>')
    return "\n".join(parts)


def _index_page(runs: pd.DataFrame, maps: dict[str, pd.DataFrame], named: set) -> str:
    e = html.escape
    svgs = []
    for run in runs.itertuples():
        frame = maps[run.run_id]
        frame = frame[[(run.run_id, f) in named for f in frame["feature"]]].dropna(subset=["hx", "hy"])
        if frame.empty:
            continue
        x = (frame["hx"] - frame["hx"].min()) / max(np.ptp(frame["hx"]), 1e-9) * 330 + 10
        y = (frame["hy"] - frame["hy"].min()) / max(np.ptp(frame["hy"]), 1e-9) * 230 + 10
        dots = "".join(
            f'<a href="features/{e(run.run_id)}/{int(f)}.html"><circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" '
            f'fill="{DOMAIN_COLOURS.get(d, "#888")}"><title>#{int(f)} {e(str(n or ""))}</title></circle></a>'
            for f, a, b, d, n in zip(frame["feature"], x, y, frame["domain"], frame["name"]))
        svgs.append(f'<figure><svg width="350" height="250">{dots}</svg><figcaption>{e(run.run_id)}</figcaption></figure>')
    return f"""<!doctype html><meta charset=utf-8><title>AR&amp;D concept atlas</title><style>{STYLE}
figure{{display:inline-block;margin:0 0.5em 0.5em 0}}#maps{{white-space:nowrap}}</style>
<h1>Concept atlas</h1>
<p class=muted>{len(runs)} run(s): {e(", ".join(runs["run_id"]))}. Static export of `ard export atlas`; opens without a server.</p>
<p><input id=search placeholder="search names and descriptions" autofocus> <span id=count class=muted></span></p>
<h2>Maps</h2><p class=muted>Each run's named features by what they hear (UMAP of their top clips' embeddings); colour =
the majority domain of the top clips: speech blue, music red, sound green. Click a dot to open the feature.</p>
<div id=maps>{"".join(svgs)}</div>
<h2>Concepts</h2>
<table id=concepts><thead><tr><th>run</th><th>feature</th><th>name</th><th>fires on</th><th>MS</th><th>freq %</th><th>H domains</th></tr></thead>
<tbody></tbody></table>
<script src="data.js"></script>
<script>
const body = document.querySelector("#concepts tbody"), count = document.getElementById("count");
function esc(s) {{ return String(s ?? "").replace(/[&<>"]/g, c => ({{"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}})[c]); }}
function show(term) {{
  const t = term.trim().toLowerCase();
  const rows = ATLAS.concepts.filter(c => !t || (String(c.name ?? "") + " " + String(c.description ?? "")).toLowerCase().includes(t));
  body.innerHTML = rows.map(c => `<tr><td>${{esc(c.run_id)}}</td><td>${{c.feature}}</td>` +
    `<td><a href="${{esc(c.page)}}">${{esc(c.name || "(unnamed)")}}</a></td><td>${{esc(c.fires_on)}}</td>` +
    `<td>${{(c.ms ?? 0).toFixed(2)}}</td>` +
    `<td>${{(100 * (c.frequency ?? 0)).toFixed(2)}}</td><td>${{esc(c.domains)}}</td></tr>`).join("");
  count.textContent = `${{rows.length}} of ${{ATLAS.concepts.length}} concepts`;
}}
document.getElementById("search").addEventListener("input", ev => show(ev.target.value));
show("");
</script>
"""
