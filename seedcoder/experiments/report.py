"""The ablation's outputs from its finished runs: results.json, report.md and curves.png (each written atomically).

    summary = summarize_runs(runs, arms=["a", "b", "c", "d"], metrics=METRICS)   # mean ± std per arm and metric
    comparisons = compare_arms(runs, METRICS)                                    # paired differences over seeds
    write_outputs(results, out_dir)                                              # results.json, report.md, PNG

Statistics. Every arm is trained with the same seeds, and a seed fixes the model's initial weights and the
loader's seed, so runs of one seed form a pair across arms. For a metric, an arm's `mean` and `std` are over its
seeds (std with ddof 1; 0 for one seed). A comparison of arm X with arm Y is over the seeds both finished: the
mean of the per-seed differences X - Y, their std, and a 95% confidence interval of that mean (Student's t with
n - 1 degrees of freedom). The verdict: "lower" / "higher" when the interval excludes 0, else "no measurable
difference". Losses: lower is better; pass@k: higher is better.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from seedcoder.fileio import atomic_write, atomic_write_text

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
CURVES_FILE = "curves.png"
RESULTS_FORMAT = "seedcoder-filter-ablation"
RESULTS_VERSION = 1
# metric -> (label, lower is better)
LOSS_METRICS = {
    "humaneval_loss": ("HumanEval prompt + solution, loss per token", True),
    "humaneval_solution_loss": ("HumanEval solution given the prompt, loss per token", True),
    "heldout_loss": ("held-out corpus files (unfiltered), loss per token", True),
}
PRIMARY = "humaneval_loss"
COMPARISONS = (("c", "a"), ("c", "b"), ("d", "a"), ("d", "b"), ("b", "a"), ("c", "d"))


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    values = [float(value) for value in values if value is not None and math.isfinite(value)]
    if not values:
        return {"values": [], "mean": None, "std": None, "n": 0}
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"values": values, "mean": float(np.mean(values)), "std": std, "n": len(values)}


def final_metrics(run: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics of a run's last evaluation (its final checkpoint), pass@k included."""
    return run["evals"][-1] if run.get("evals") else {}


def summarize_runs(runs: Sequence[Mapping[str, Any]], arms: Sequence[str], metrics: Sequence[str]
                   ) -> dict[str, dict[str, Any]]:
    """{arm: {metric: {values, mean, std, n, seeds}}} over the arm's finished runs (final checkpoint)."""
    summary: dict[str, dict[str, Any]] = {}
    for arm in arms:
        mine = sorted((run for run in runs if run["arm"] == arm), key=lambda run: run["seed"])
        summary[arm] = {}
        for metric in metrics:
            pairs = [(run["seed"], final_metrics(run).get(metric)) for run in mine]
            pairs = [(seed, value) for seed, value in pairs if value is not None]
            entry = mean_std([value for _, value in pairs])
            entry["seeds"] = [seed for seed, _ in pairs]
            summary[arm][metric] = entry
    return summary


def curves(runs: Sequence[Mapping[str, Any]], arms: Sequence[str], metrics: Sequence[str]) -> dict[str, Any]:
    """{arm: {metric: {"steps", "mean", "std"}}}: the eval metrics at each evaluated step, over seeds; plus the
    training loss ("train_loss") per step, over seeds."""
    result: dict[str, Any] = {}
    for arm in arms:
        mine = [run for run in runs if run["arm"] == arm]
        result[arm] = {}
        for metric in metrics:
            by_step: dict[int, list[float]] = {}
            for run in mine:
                for record in run.get("evals", []):
                    if record.get(metric) is not None:
                        by_step.setdefault(int(record["step"]), []).append(float(record[metric]))
            steps = sorted(by_step)
            result[arm][metric] = {"steps": steps, "mean": [float(np.mean(by_step[s])) for s in steps],
                                   "std": [float(np.std(by_step[s], ddof=1)) if len(by_step[s]) > 1 else 0.0
                                           for s in steps]}
        train: dict[int, list[float]] = {}
        for run in mine:
            for step, loss in run.get("train_loss", []):
                train.setdefault(int(step), []).append(float(loss))
        steps = sorted(train)
        result[arm]["train_loss"] = {"steps": steps, "mean": [float(np.mean(train[s])) for s in steps]}
    return result


def paired_difference(x: Mapping[int, float], y: Mapping[int, float], *, lower_is_better: bool) -> dict[str, Any]:
    """X - Y over the seeds both have (module docstring)."""
    seeds = sorted(set(x) & set(y))
    differences = [float(x[seed]) - float(y[seed]) for seed in seeds]
    result: dict[str, Any] = {"seeds": seeds, "n": len(seeds), "differences": differences}
    if not differences:
        return {**result, "mean": None, "std": None, "ci95": None, "verdict": "not measured"}
    mean = float(np.mean(differences))
    std = float(np.std(differences, ddof=1)) if len(differences) > 1 else 0.0
    if len(differences) > 1:
        half = float(stats.t.ppf(0.975, len(differences) - 1)) * std / math.sqrt(len(differences))
        interval = [mean - half, mean + half]
        if interval[1] < 0:
            verdict = "lower"
        elif interval[0] > 0:
            verdict = "higher"
        else:
            verdict = "no measurable difference"
    else:
        interval, verdict = None, "one seed: no interval"
    better = {"lower": lower_is_better, "higher": not lower_is_better}.get(verdict)
    return {**result, "mean": mean, "std": std, "ci95": interval, "verdict": verdict,
            "better": better}


def compare_arms(runs: Sequence[Mapping[str, Any]], metrics: Mapping[str, tuple[str, bool]],
                 pairs: Sequence[tuple[str, str]] = COMPARISONS) -> list[dict[str, Any]]:
    """Paired differences (arm - baseline) for each metric and pair of arms that both have runs."""
    values: dict[tuple[str, str], dict[int, float]] = {}
    for run in runs:
        for metric in metrics:
            value = final_metrics(run).get(metric)
            if value is not None:
                values.setdefault((run["arm"], metric), {})[run["seed"]] = value
    comparisons = []
    for metric, (_, lower_is_better) in metrics.items():
        for arm, baseline in pairs:
            if (arm, metric) in values and (baseline, metric) in values:
                comparisons.append({"metric": metric, "arm": arm, "baseline": baseline,
                                    **paired_difference(values[(arm, metric)], values[(baseline, metric)],
                                                        lower_is_better=lower_is_better)})
    return comparisons


def _find(comparisons: Sequence[Mapping[str, Any]], metric: str, arm: str, baseline: str) -> Mapping[str, Any] | None:
    return next((c for c in comparisons if (c["metric"], c["arm"], c["baseline"]) == (metric, arm, baseline)), None)


def _phrase(comparison: Mapping[str, Any] | None, names: Mapping[str, str]) -> str:
    if comparison is None or comparison["mean"] is None:
        return "not measured"
    arm, baseline = comparison["arm"], comparison["baseline"]
    interval = comparison["ci95"]
    numbers = f"{comparison['mean']:+.4f}" + (f" (95% CI {interval[0]:+.4f} .. {interval[1]:+.4f}, {comparison['n']} "
                                              f"paired seeds)" if interval else f" ({comparison['n']} seed)")
    if comparison["verdict"] in ("lower", "higher"):
        how = "better" if comparison["better"] else "worse"
        return f"({arm}) {names[arm]} was {how} than ({baseline}) {names[baseline]}: {numbers}"
    return f"({arm}) {names[arm]} vs ({baseline}) {names[baseline]}: no measurable difference, {numbers}"


def verdict(comparisons: Sequence[Mapping[str, Any]], names: Mapping[str, str], metric: str = PRIMARY) -> str:
    """Whether filtering helped, in plain words, from the primary metric's paired comparisons."""
    c_a, c_b, d_a = (_find(comparisons, metric, *pair) for pair in (("c", "a"), ("c", "b"), ("d", "a")))
    if c_a is None or c_a["mean"] is None:
        return "Not enough finished runs to judge yet."
    label = LOSS_METRICS.get(metric, (metric,))[0]

    def better(comparison) -> bool | None:
        if comparison is None or comparison["verdict"] not in ("lower", "higher"):
            return None
        return bool(comparison["better"])

    if better(c_a) and better(c_b):
        head = ("Yes, here: the scorer's filter (c) beat both training on everything (a) and dropping the same "
                "number of files at random (b)")
    elif better(c_a) and better(c_b) is None:
        head = ("Partly: the scorer's filter (c) beat training on everything (a), but not measurably the random drop "
                "of the same size (b), so the gain may come from dropping data at all rather than from the choice")
    elif better(c_a) is False:
        head = "No: the scorer's filter (c) made the model worse than training on everything (a)"
    elif better(c_a) is None and better(c_b) is False:
        head = "No: the scorer's filter (c) did worse than a random drop of the same size (b)"
    else:
        head = "No measurable effect: the scorer's filter (c) did not differ measurably from training on everything (a)"
    oracle = ""
    if better(d_a):
        oracle = " The oracle's own ratings (d) did help, so the scorer did not carry all of its teacher's signal."
    elif better(d_a) is False:
        oracle = " The oracle's own ratings (d) hurt as well: what the oracle calls low quality was useful here."
    elif d_a is not None and d_a["mean"] is not None:
        oracle = " The oracle's own ratings (d) made no measurable difference either."
    return f"{head} ({label}).{oracle}"


# ------------------------------------------------------------------------------------------ outputs
def _format(entry: Mapping[str, Any] | None, digits: int = 4) -> str:
    if not entry or entry.get("mean") is None:
        return "—"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def render_report(results: Mapping[str, Any]) -> str:
    names = {arm: info["label"] for arm, info in results["arms"].items()}
    setup = results["setup"]
    corpus = results["corpus"]
    lines = ["# Filter ablation: does model-based quality filtering help?", ""]
    lines += [f"**Verdict.** {results['verdict']}", ""]
    complete = results["progress"]
    if complete["finished_runs"] < complete["planned_runs"]:
        lines += [f"*Partial: {complete['finished_runs']} of {complete['planned_runs']} runs finished; rerun the "
                  "command to continue.*", ""]
    lines += ["Command:", "", "```", results["command"], "```", ""]
    lines += ["## Setup", ""]
    train, held = corpus["splits"]["train"], corpus["splits"]["heldout"]
    lines += [f"- Corpus: {train['files']:,} training files ({train['bytes'] / 2**20:.2f} MiB, {train['projects']} "
              f"projects) and {held['files']:,} held-out files ({held['bytes'] / 2**20:.2f} MiB), sampled (seed "
              f"{corpus['settings']['corpus']['seed']}) from {', '.join(r[0] for r in corpus['settings']['roots'])} "
              f"of {corpus['candidates']['files']:,} candidate files in {corpus['candidates']['projects']} projects; "
              f"{len(corpus['humaneval_matches'])} file(s) matching HumanEval left out.",
              "- Kinds of training files (labels for this report; no filter sees them): "
              + ", ".join(f"{kind} {count}" for kind, count in train["kinds"].items() if count) + "."]
    rules = results["curation"]["rules"]
    def rule(step: str, info: Mapping[str, Any]) -> str:
        text = f"{step} kept {info['kept_rows']:,}"
        if info["dropped_rows"]:
            reasons = ", ".join(f"{reason} {count}" for reason, count in info["drop_reasons"].items())
            text += f", dropped {info['dropped_rows']:,} ({reasons})"
        return text

    lines.append("- Rules (curation pipeline): " + "; ".join(rule(step, info) for step, info in rules.items()) + ".")
    oracle, scorer = results["curation"]["oracle"], results["curation"]["scorer"]
    lines.append(f"- Oracle: backend {oracle['backend']!r} ({', '.join(oracle['names']) or '?'}), "
                 f"{oracle['sampled']:,} files rated for the scorer, {oracle['rated_all']:,} rated for arm (d); "
                 f"mean rating {oracle['mean_rating']:.2f}." if oracle.get("mean_rating") is not None else
                 f"- Oracle: backend {oracle['backend']!r}.")
    metrics = scorer.get("metrics") or {}
    agreement = scorer.get("agreement") or {}
    lines.append(f"- Scorer: from {scorer['base']}; held-out MAE {metrics.get('mae', float('nan')):.3f} (predicting the "
                 f"mean: {metrics.get('baseline_mae', float('nan')):.3f}), Pearson r "
                 f"{_number(metrics.get('pearson_r'))}; against the oracle on every file: Spearman "
                 f"{_number(agreement.get('spearman'))}, and {_number(agreement.get('dropped_overlap'))} of the files "
                 "it dropped were also dropped by the oracle (arm d).")
    overrides = f" with {setup['overrides']}" if setup["overrides"] else ""
    lines.append(f"- Model: preset {setup['preset']!r}{overrides} ({setup['parameters']:,} parameters), "
                 f"{setup['steps']} steps x {setup['batch_size']} rows x {setup['seq_len']} tokens = "
                 f"{setup['token_budget']:,} tokens per run, lr {setup['lr']} ({setup['schedule']}, warmup "
                 f"{setup['warmup_steps']}), FIM rate {setup['fim_rate']}, seeds {setup['seeds']}; "
                 f"one tokenizer ({setup['vocab_size']:,} tokens, trained on arm (a)) for every arm.")
    lines.append(f"- Drop fraction {setup['drop_fraction']:.0%} for arms (b)-(d) (same number of files each).")
    lines += ["", "| arm | what | files | tokens | epochs of the budget | dropped | dropped by kind (share of that kind) |",
              "|---|---|---|---|---|---|---|"]
    for arm, info in results["arms"].items():
        kinds = ", ".join(f"{kind} {count} ({share:.0%})" for kind, (count, share) in info["dropped_kinds"].items())
        lines.append(f"| ({arm}) | {info['label']} | {info['documents']:,} | {info['tokens']:,} | "
                     f"{info['epochs']:.2f} | {info['dropped']:,} | {kinds or '—'} |")
    lines += ["", "## Results (final checkpoint, mean ± std over seeds)", ""]
    metric_names = list(results["metrics"])
    lines += ["| arm | " + " | ".join(metric_names) + " |", "|---|" + "---|" * len(metric_names)]
    for arm in results["arms"]:
        lines.append(f"| ({arm}) {names[arm]} | " + " | ".join(_format(results["summary"][arm].get(m))
                                                           for m in metric_names) + " |")
    lines += ["", "Metrics: " + "; ".join(f"`{m}`: {label}" for m, label in results["metrics"].items()) + ".", ""]
    lines += ["## Paired comparisons (arm − baseline, same seeds)", "",
              "| metric | comparison | mean difference | 95% CI | verdict |", "|---|---|---|---|---|"]
    for comparison in results["comparisons"]:
        interval = comparison["ci95"]
        shown = f"{interval[0]:+.4f} .. {interval[1]:+.4f}" if interval else "—"
        mean = f"{comparison['mean']:+.4f}" if comparison["mean"] is not None else "—"
        lines.append(f"| {comparison['metric']} | ({comparison['arm']}) − ({comparison['baseline']}) | {mean} | "
                     f"{shown} | {comparison['verdict']} |")
    lines += ["", "## pass@k", "", results["passk"]["note"], ""]
    lines += ["## Curves", "", f"![eval loss per arm]({CURVES_FILE})", "",
              "Eval losses at each evaluated checkpoint (mean over seeds, band: ± std) and the training loss.", ""]
    lines += ["## Files", "", "`results.json` (everything above, per seed), `curves.png`, `corpus/` (train/, "
              "heldout.jsonl, files.jsonl, manifest.json), `curate/` (each curation step), `arms/<arm>/` (dataset, shards), "
              "`runs/<arm>-s<seed>/` (training logs, the final checkpoint, evals/, result.json).", ""]
    lines += [f"Wall time of this invocation: {results['timing']['total_s'] / 60:.1f} min.", ""]
    return "\n".join(lines)


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else "—"


def plot_curves(results: Mapping[str, Any], path: str) -> str:
    """The eval-loss curves per arm (mean ± std over seeds) and the training loss, as a PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [*[metric for metric in results["metrics"] if metric in LOSS_METRICS], "train_loss"]
    columns = 2
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4 * rows), dpi=110, squeeze=False)
    axes = axes.ravel()
    for axis in axes[len(panels):]:
        axis.set_visible(False)
    colors = {"a": "tab:blue", "b": "tab:gray", "c": "tab:green", "d": "tab:red"}
    for axis, panel in zip(axes, panels):
        for arm, data in results["curves"].items():
            curve = data.get(panel) or {}
            steps, mean = curve.get("steps") or [], curve.get("mean") or []
            if not steps:
                continue
            label = f"({arm}) {results['arms'][arm]['label']}"
            if panel == "train_loss":
                window = max(1, len(mean) // 20)
                mean = [float(np.mean(mean[max(0, i - window + 1):i + 1])) for i in range(len(mean))]
                axis.plot(steps, mean, color=colors.get(arm), linewidth=1.2, label=label)
            else:
                std = np.asarray(curve.get("std") or [0.0] * len(mean))
                axis.plot(steps, mean, marker="o", color=colors.get(arm), label=label)
                axis.fill_between(steps, np.asarray(mean) - std, np.asarray(mean) + std, color=colors.get(arm),
                                  alpha=0.15)
        axis.set_title(results["metrics"].get(panel, "training loss (smoothed)"), fontsize=9)
        axis.set_xlabel("step")
        axis.set_ylabel("nats / token")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()

    def body(file) -> None:
        figure.savefig(file, format="png")

    try:
        atomic_write(path, body)
    finally:
        plt.close(figure)
    return path


def write_outputs(results: Mapping[str, Any], out_dir: str) -> dict[str, str]:
    """results.json, report.md and curves.png in out_dir (atomic); returns their paths."""
    paths = {name: os.path.join(out_dir, name) for name in (RESULTS_FILE, REPORT_FILE, CURVES_FILE)}
    plot_curves(results, paths[CURVES_FILE])
    atomic_write_text(paths[RESULTS_FILE], json.dumps(results, indent=1, sort_keys=False, default=str) + "\n")
    atomic_write_text(paths[REPORT_FILE], render_report(results))
    return paths


__all__ = ["COMPARISONS", "CURVES_FILE", "LOSS_METRICS", "PRIMARY", "REPORT_FILE", "RESULTS_FILE", "RESULTS_FORMAT",
           "RESULTS_VERSION", "compare_arms", "curves", "final_metrics", "mean_std", "paired_difference",
           "plot_curves", "render_report", "summarize_runs", "verdict", "write_outputs"]
