"""The self-curation loop's report (`seedcoder.experiments.self_curation`): per round, the oracle's ratings, the
agreement between rounds, the scorer against its teacher and the constant baseline, the score histograms, what was
dropped, tokens kept, the next model's loss; report.md + report.json (atomically) and PNG plots.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import stats

from seedcoder.curate import dataset as ds
from seedcoder.curate.report import SCORE_BINS, SCORE_RANGE
from seedcoder.curate.scorer_train import METRICS_FILE, PREDICTIONS_FILE
from seedcoder.demo.runs import loss_fall
from seedcoder.fileio import atomic_write_text, save_png
from seedcoder.metrics import read_jsonl
from seedcoder.tokenizer import load_tokenizer

REPORT_FORMAT = "seedcoder-self-curation-report"
PRETRAIN_RECORD = "pretrain.json"  # a round's pretraining: its config and data, beside the round's steps
SCORER_TARGET = {"mae_ratio": 0.6, "spearman": 0.7}  # the issue's target: MAE <= 0.6 x the constant's, Spearman >= 0.7


def read_record(path: str) -> Any:
    """A JSON file's value, or None when it is missing or unreadable (a step that has not run yet)."""
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError):
        return None


def dataset_rows(dataset: str) -> int:
    """The kept rows of a finished curation dataset (0 when it is not finished)."""
    return int((ds.success_record(dataset) or {}).get("totals", {}).get("kept_rows", 0))


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson's r; None for fewer than 2 pairs or a constant side."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(stats.pearsonr(a, b).statistic)


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation (ties averaged); None for fewer than 2 pairs or a constant side."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(stats.spearmanr(a, b).statistic)


# ------------------------------------------------------------------------------------------ the report
def _ratings(oracle_dir: str) -> dict[str, dict[str, Any]]:
    """id -> {value, rating, language, path} of an oracle step's rated rows (value: rating_score when present)."""
    rows: dict[str, dict[str, Any]] = {}
    for _, table in ds.iter_tables(oracle_dir):
        names = table.column_names
        values = table.column("rating_score" if "rating_score" in names else "rating").to_pylist()
        entropies = table.column("rating_entropy").to_pylist() if "rating_entropy" in names else [None] * len(values)
        for row_id, value, rating, entropy, language, path, name in zip(
                table.column("id").to_pylist(), values, table.column("rating").to_pylist(), entropies,
                table.column("language").to_pylist(), table.column("path").to_pylist(),
                table.column("oracle").to_pylist()):
            if value is None and rating is not None:
                value = float(rating)
            rows[row_id] = {"value": value, "rating": rating, "entropy": entropy, "language": language or "unknown",
                            "path": path, "oracle": name}
    return rows


def oracle_summary(oracle_dir: str) -> dict[str, Any]:
    rated = _ratings(oracle_dir)
    values = np.array([row["value"] for row in rated.values() if row["value"] is not None], dtype=np.float64)
    entropies = [row["entropy"] for row in rated.values() if row["entropy"] is not None]
    counts = [0] * 11
    for row in rated.values():
        if row["rating"] is not None:
            counts[int(row["rating"])] += 1
    success = ds.success_record(oracle_dir) or {}
    return {"oracle": sorted({row["oracle"] for row in rated.values()}), "sampled": success.get("sampled"),
            "population": success.get("population"), "rated": len(rated),
            "unparseable": int(success.get("totals", {}).get("dropped_rows", 0)),
            "mean": float(values.mean()) if len(values) else None, "std": float(values.std()) if len(values) else None,
            "mean_entropy": float(np.mean(entropies)) if entropies else None, "rating_counts": counts}


def agreement_summary(first_dir: str, second_dir: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The same files rated twice (by M_k, then M_{k+1}): Spearman, Pearson, mean |difference|, exact matches."""
    first, second = _ratings(first_dir), _ratings(second_dir)
    common = [i for i in first if i in second and first[i]["value"] is not None and second[i]["value"] is not None]
    a = np.array([first[i]["value"] for i in common], dtype=np.float64)
    b = np.array([second[i]["value"] for i in common], dtype=np.float64)
    summary = {"n": len(common), "spearman": spearman(a, b), "pearson": pearson(a, b),
               "mean_abs_diff": float(np.abs(a - b).mean()) if len(common) else None,
               "same_rating": (sum(first[i]["rating"] == second[i]["rating"] for i in common) / len(common)
                               if common else None),
               "mean_first": float(a.mean()) if len(common) else None,
               "mean_second": float(b.mean()) if len(common) else None,
               "oracle_second": sorted({second[i]["oracle"] for i in common})}
    return summary, a, b


def scorer_summary(scorer_dir: str) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    metrics = read_record(os.path.join(scorer_dir, METRICS_FILE)) or {}
    predictions = pq.read_table(os.path.join(scorer_dir, PREDICTIONS_FILE))
    teacher = np.asarray(predictions.column("rating").to_numpy(), dtype=np.float64)
    predicted = np.asarray(predictions.column("prediction").to_numpy(), dtype=np.float64)
    mae, baseline = metrics.get("mae"), metrics.get("baseline_mae")
    rho = spearman(teacher, predicted)
    ratio = mae / baseline if mae is not None and baseline else None
    summary = {"mae": mae, "baseline_mae": baseline, "mae_ratio": ratio, "pearson": metrics.get("pearson_r"),
               "spearman": rho, "n_train": metrics.get("n_train"), "n_eval": metrics.get("n_eval"),
               "steps": metrics.get("steps"), "base_checkpoint": (metrics.get("settings") or {}).get("checkpoint"),
               "meets_target": (ratio is not None and rho is not None and ratio <= SCORER_TARGET["mae_ratio"]
                                and rho >= SCORER_TARGET["spearman"])}
    return summary, teacher, predicted


def score_histograms(score_dir: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """20-bin histograms of the scores over 0..10, overall and per language (most files first), with counts and
    means; and the scores themselves per group (for the plot)."""
    scores, languages = [], []
    for _, table in ds.iter_tables(score_dir, ["score", "language"]):
        scores.append(np.asarray(table.column("score").to_numpy(zero_copy_only=False), dtype=np.float64))
        languages += [value or "unknown" for value in table.column("language").to_pylist()]
    values = np.concatenate(scores) if scores else np.zeros(0)
    edges = np.linspace(SCORE_RANGE[0], SCORE_RANGE[1], SCORE_BINS + 1)
    language_array = np.array(languages, dtype=object)
    names, counts = np.unique(language_array, return_counts=True) if languages else (np.zeros(0), np.zeros(0))
    groups = {"all": values}
    for index in sorted(range(len(names)), key=lambda i: (-counts[i], names[i])):
        groups[str(names[index])] = values[language_array == names[index]]
    result = {"edges": edges.tolist(), "languages": {}}
    for name, chosen in groups.items():
        result["languages"][name] = {"files": int(len(chosen)), "mean": float(chosen.mean()) if len(chosen) else None,
                                     "counts": np.histogram(np.clip(chosen, *SCORE_RANGE), bins=edges)[0].tolist()}
    return result, groups


def _text_head(text: str, lines: int, width: int = 160) -> str:
    head = (text or "").splitlines()[:lines]
    return "\n".join(line if len(line) <= width else line[:width] + " ..." for line in head)


def filter_summary(score_dir: str, filter_dir: str, tokenize_dir: str, tokenizer: str, examples: int,
                   head_lines: int) -> dict[str, Any]:
    """Files and tokens kept and dropped; the lowest-scored dropped files (score, path, text head)."""
    success = ds.success_record(filter_dir) or {}
    kept_files, dropped_files = int(success["totals"]["kept_rows"]), int(success["totals"]["dropped_rows"])
    columns = ["id", "repo", "path", "language", "score", "text"]
    dropped = [table for _, table in ds.iter_tables(filter_dir, columns, dropped=True)]
    table = pa.concat_tables(dropped) if dropped else None
    rows = table.to_pylist() if table is not None else []
    encoder = load_tokenizer(tokenizer)
    dropped_tokens = sum(len(encoding.ids) for start in range(0, len(rows), 256) for encoding in
                         encoder.encode_batch([row["text"] or "" for row in rows[start:start + 256]],
                                              add_special_tokens=False))
    kept_tokens = int(((ds.success_record(tokenize_dir) or {}).get("totals") or {}).get("tokens", 0))
    rows.sort(key=lambda row: (row["score"], row["id"]))
    shown = [{"score": float(row["score"]), "path": row["path"], "repo": row["repo"], "language": row["language"],
              "head": _text_head(row["text"], head_lines)} for row in rows[:examples]]
    score_files = dataset_rows(score_dir)
    return {"files": score_files, "kept_files": kept_files, "dropped_files": dropped_files,
            "kept_fraction": kept_files / score_files if score_files else None,
            "keep_from": (success.get("reduce") or {}).get("keep_from") or success.get("keep_from"),
            "tokens_kept": kept_tokens, "tokens_dropped": int(dropped_tokens),
            "tokens_total": kept_tokens + int(dropped_tokens),
            "tokens_kept_fraction": kept_tokens / (kept_tokens + dropped_tokens) if kept_tokens + dropped_tokens else None,
            "lowest_dropped": shown}


def pretrain_summary(round_dir: str, next_model: str) -> dict[str, Any]:
    records = [r for r in read_jsonl(os.path.join(round_dir, "pretrain", "metrics.jsonl")) if not r.get("skipped")]
    config = (read_record(os.path.join(round_dir, PRETRAIN_RECORD)) or {}).get("config") or {}
    first, last, window = loss_fall(records) if records else (None, None, 0)
    return {"checkpoint": next_model, "init_from": (config.get("checkpoint") or {}).get("init_from") or None,
            "steps": (config.get("train") or {}).get("steps"), "logged_steps": len(records),
            "loss_first": first, "loss_last": last, "loss_window": window,
            "tokens_seen": records[-1].get("tokens_seen") if records else None}


def round_report(cfg: Any, paths: Mapping[str, Any], plots_dir: str | None) -> dict[str, Any]:
    k = paths["round"]
    scorer, teacher, predicted = scorer_summary(paths["scorer_train_dir"])
    histograms, scores = score_histograms(paths["score_dir"])
    report: dict[str, Any] = {
        "round": k, "model": paths["model"], "next_model": paths["next_model"], "dir": paths["dir"],
        "oracle": oracle_summary(paths["oracle_dir"]),
        "agreement": None,
        "scorer": scorer,
        "scores": histograms,
        "filter": filter_summary(paths["score_dir"], paths["score_filter_dir"], paths["tokenize_dir"],
                                 paths["tokenizer"], cfg.report.examples, cfg.report.head_lines),
        "pretrain": pretrain_summary(paths["dir"], paths["next_model"]),
        "plots": {},
    }
    first = second = None
    if cfg.oracle.agreement and ds.is_finished(paths["agreement_dir"]):
        report["agreement"], first, second = agreement_summary(paths["oracle_dir"], paths["agreement_dir"])
    if plots_dir is not None:
        report["plots"] = draw_round(k, plots_dir, report, scores, teacher, predicted, first, second)
    return report


def _limits(*arrays: np.ndarray) -> tuple[float, float]:
    """The range of the values, padded: the plots zoom in on where the ratings and scores are (often a narrow band
    of 0..10 for a small model)."""
    values = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays]) if arrays else np.zeros(0)
    if not len(values):
        return SCORE_RANGE
    low, high = float(values.min()), float(values.max())
    pad = max(0.05 * (high - low), 0.05)
    return low - pad, high + pad


def draw_round(k: int, plots_dir: str, report: Mapping[str, Any], scores: Mapping[str, np.ndarray],
               teacher: np.ndarray, predicted: np.ndarray, first: np.ndarray | None, second: np.ndarray | None
               ) -> dict[str, str]:
    """round-k-scores.png (the scores per language), round-k-scorer.png (held-out predictions vs the teacher) and
    round-k-agreement.png (M_k vs M_{k+1} on the same files); returns {name: path relative to the report}."""
    import matplotlib  # here: the report's plots are the only users of matplotlib in this module

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(plots_dir, exist_ok=True)
    written = {}

    def save(figure, name: str) -> None:
        path = os.path.join(plots_dir, f"round-{k}-{name}.png")
        save_png(figure, path, dpi=100, bbox_inches="tight")
        written[name] = os.path.join(os.path.basename(plots_dir), os.path.basename(path))

    names = list(scores)[:9]  # "all" and the 8 languages with most files
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    low, high = _limits(scores["all"])
    edges = np.linspace(low, high, 31)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.6 * rows), squeeze=False)
    keep_from = report["filter"].get("keep_from") or {}
    for axis, name in zip(axes.flat, names):
        values = scores[name]
        axis.hist(values, bins=edges, color="tab:blue", alpha=0.8)
        threshold = keep_from.get(name, keep_from.get("all"))
        if threshold is not None:
            axis.axvline(threshold, color="tab:red", linestyle="--", linewidth=1)
        mean = f", mean {values.mean():.2f}" if len(values) else ""
        axis.set_title(f"{name} ({len(values)} files{mean})", fontsize=9)
        axis.set_xlim(low, high)
    for axis in list(axes.flat)[len(names):]:
        axis.axis("off")
    figure.suptitle(f"round {k}: the scorer's score of every file (red: keep threshold; x: this round's range "
                    "of the 0..10 scale)", fontsize=10)
    figure.tight_layout()
    save(figure, "scores")

    def scatter(x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str, title: str, name: str) -> None:
        figure, axis = plt.subplots(figsize=(4.8, 4.5))
        axis.scatter(x, y, s=14, alpha=0.6)
        low, high = _limits(x, y)
        axis.plot([low, high], [low, high], color="gray", linewidth=1, label="y = x")
        axis.set_xlim(low, high)
        axis.set_ylim(low, high)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.legend(loc="upper left", fontsize=8)
        axis.set_title(title, fontsize=9)
        save(figure, name)

    scorer = report["scorer"]
    rho = "n/a" if scorer["spearman"] is None else f"{scorer['spearman']:.2f}"
    scatter(teacher, predicted, "teacher's rating (held-out files)", "scorer's prediction",
            f"round {k}: scorer MAE {scorer['mae']:.3f} (constant: {scorer['baseline_mae']:.3f}), Spearman {rho}",
            "scorer")
    if first is not None and second is not None and len(first):
        agreement = report["agreement"]
        rho = "n/a" if agreement["spearman"] is None else f"{agreement['spearman']:.2f}"
        scatter(first, second, f"rating by M_{k}", f"rating by M_{k + 1}",
                f"round {k}: the same files rated twice: Spearman {rho}, mean |diff| {agreement['mean_abs_diff']:.2f}",
                "agreement")
    return written


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if math.isfinite(value) else str(value)
    return f"{value:,}" if isinstance(value, int) else str(value)


def _thresholds(keep_from: Mapping[str, Any] | None) -> str:
    """{"all": 3.51} -> "3.510"; per language: "python 3.510, javascript 4.200"."""
    if not keep_from:
        return "n/a"
    if list(keep_from) == ["all"]:
        return _number(keep_from["all"])
    return ", ".join(f"{name} {_number(value)}" for name, value in keep_from.items())


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _fence(text: str) -> str:
    longest, run = 0, 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    return "`" * max(3, longest + 1)


def render_markdown(report: Mapping[str, Any]) -> str:
    lines = ["# Self-curation loop", "",
             f"Input: `{report['input']['dataset']}` ({report['input']['files']:,} files); M_0: "
             f"`{report['input']['model']}`; oracle backend `{report['config']['oracle']['backend']}`, "
             f"{report['config']['oracle']['n']} files per round; drop fraction "
             f"{report['config']['filter']['drop_fraction']}; {len(report['rounds'])} of "
             f"{report['config']['run']['rounds']} round(s) done.", "",
             "| round | rated by | agreement with M_k+1: Spearman / mean abs diff | scorer MAE / constant's / "
             "Spearman | target met | files kept | tokens kept / total | M_k+1 loss first -> last |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["rounds"]:
        agreement, scorer, kept, train = r["agreement"] or {}, r["scorer"], r["filter"], r["pretrain"]
        lines.append(
            f"| {r['round']} | {', '.join(r['oracle']['oracle'])} | {_number(agreement.get('spearman'))} / "
            f"{_number(agreement.get('mean_abs_diff'))} | {_number(scorer['mae'])} / {_number(scorer['baseline_mae'])} / "
            f"{_number(scorer['spearman'])} | {'yes' if scorer['meets_target'] else 'no'} | "
            f"{kept['kept_files']:,} of {kept['files']:,} | {kept['tokens_kept']:,} / {kept['tokens_total']:,} | "
            f"{_number(train['loss_first'])} -> {_number(train['loss_last'])} |")
    lines += ["", f"Scorer target (this project's bar): held-out MAE <= {SCORER_TARGET['mae_ratio']} x the constant "
                  f"baseline's and Spearman >= {SCORER_TARGET['spearman']} against its teacher.", ""]
    for r in report["rounds"]:
        k = r["round"]
        oracle, scorer, kept = r["oracle"], r["scorer"], r["filter"]
        lines += [f"## Round {k}", "", f"M_{k}: `{r['model']}` -> M_{k + 1}: `{r['next_model']}`", "",
                  f"**Oracle** ({', '.join(oracle['oracle'])}): rated {oracle['rated']} of {oracle['sampled']} sampled "
                  f"files (population {oracle['population']}), {oracle['unparseable']} unparseable; mean "
                  f"{_number(oracle['mean'], 2)}, std {_number(oracle['std'], 2)}"
                  + (f", mean entropy of the rater's distribution {oracle['mean_entropy']:.2f} nats (uniform over 0..10: "
                     f"{math.log(11):.2f})" if oracle["mean_entropy"] is not None else "")
                  + f"; ratings 0..10: {oracle['rating_counts']}", ""]
        agreement = r["agreement"]
        if agreement:
            lines += [f"**Agreement** (the same {agreement['n']} files rated by M_{k} and by M_{k + 1}): Spearman "
                      f"{_number(agreement['spearman'])}, Pearson {_number(agreement['pearson'])}, mean absolute "
                      f"difference {_number(agreement['mean_abs_diff'])}, same rating {_number(agreement['same_rating'])}"
                      f"; mean {_number(agreement['mean_first'], 2)} -> {_number(agreement['mean_second'], 2)}", ""]
        lines += [f"**Scorer** (initialised from `{scorer['base_checkpoint']}`, {scorer['n_train']} training rows, "
                  f"{scorer['n_eval']} held out): MAE {_number(scorer['mae'])} vs {_number(scorer['baseline_mae'])} "
                  f"for the constant (ratio {_number(scorer['mae_ratio'])}), Spearman {_number(scorer['spearman'])}, "
                  f"Pearson {_number(scorer['pearson'])}; target {'met' if scorer['meets_target'] else 'not met'}", "",
                  f"**Filter**: kept {kept['kept_files']:,} of {kept['files']:,} files "
                  f"({_number(kept['kept_fraction'])}), tokens {kept['tokens_kept']:,} of {kept['tokens_total']:,} "
                  f"({_number(kept['tokens_kept_fraction'])}); kept from score {_thresholds(kept['keep_from'])}", "",
                  "| language | files | mean score |", "|---|---|---|"]
        for name, entry in r["scores"]["languages"].items():
            lines.append(f"| {_cell(name)} | {entry['files']:,} | {_number(entry['mean'], 2)} |")
        lines.append("")
        for name, path in r["plots"].items():
            lines += [f"![round {k} {name}]({path})", ""]
        train = r["pretrain"]
        lines += [f"**Pretraining M_{k + 1}** ({'from ' + train['init_from'] if train['init_from'] else 'fresh weights'}): "
                  f"{train['logged_steps']} of {train['steps']} steps logged, loss {_number(train['loss_first'])} -> "
                  f"{_number(train['loss_last'])} (mean of the first / last {train['loss_window']} steps)", "",
                  f"**Lowest-scored dropped files** ({len(kept['lowest_dropped'])} shown):", ""]
        for example in kept["lowest_dropped"]:
            fence = _fence(example["head"])
            lines += [f"- {example['score']:.3f} `{example['repo']}/{example['path']}` ({example['language']})", "",
                      fence, example["head"], fence, ""]
    return "\n".join(lines) + "\n"


def write_report(cfg: Any, out: str, dataset: str, model: str, done: Sequence[Mapping[str, Any]]
                 ) -> dict[str, Any]:
    plots_dir = os.path.join(out, "plots") if cfg.report.plots else None
    report = {"format": REPORT_FORMAT, "config": dataclasses.asdict(cfg),
              "input": {"dataset": dataset, "files": dataset_rows(dataset), "model": model},
              "rounds": [round_report(cfg, paths, plots_dir) for paths in done],
              "complete": len(done) == cfg.run.rounds}
    ds.write_json(os.path.join(out, "report.json"), report)
    atomic_write_text(os.path.join(out, "report.md"), render_markdown(report))
    return report
