"""`llm-report <multirun dir>...`: what a sweep found, without W&B. Writes <dir>/report/: report.md and
report.csv (swept overrides vs results.json metrics: the best checkpoint's `val` and `test`; best first; pruned trials
with their step, failed jobs with their error), a plot of the optimized metric against each swept parameter (every
job, pruned and failed ones marked; log axis for parameters searched on a log scale; coloured by a second swept
parameter), the learning curves of the best runs (csv logger), and the optimisation history: objective per trial and
best so far, with Optuna's parameter importances when the jobs belong to a stored study (read from the study, so a
study spread over several sweep directories counts each trial once)."""

from __future__ import annotations

import argparse
import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from hydra_plugins.lightning_llm_optuna.sweeper import resolve_direction
from lightning_llm.errors import UserError, exit_on_user_error
from lightning_llm.runtime.extras import require_extra
from lightning_llm.tracking.jobs import (
    SweepJob,
    sweep_jobs,
    sweep_overrides,
    swept_overrides,
)
from lightning_llm.tracking.keep import REMOVED_KEY
from lightning_llm.tracking.studies import History, histories, importances
from lightning_llm.tracking.trials import PRUNED_AT


@dataclass
class Row:
    job: SweepJob
    label: str  # the job's directory name; "<sweep>/<job>" when several sweeps are reported together
    params: dict[str, str]
    value: float | None

    @property
    def metrics(self) -> dict[str, float]:
        results = self.job.results or {}
        return {**(results.get("val") or {}), **(results.get("test") or {})}


def build_rows(sweep_dirs: list[Path], metric: str | None) -> tuple[list[Row], str, list[str]]:
    """One row per job (params = its swept overrides), the metric's name and the swept keys that vary."""
    rows = []
    for sweep_dir in sweep_dirs:
        jobs = sweep_jobs(sweep_dir)
        if not jobs:
            raise UserError(f"{sweep_dir}: no job directories (with .hydra/) found; pass a multirun directory")
        fixed = sweep_overrides(sweep_dir)
        for job in jobs:
            params = dict(o.split("=", 1) for o in swept_overrides(job.overrides, fixed) if "=" in o)
            label = f"{sweep_dir.name}/{job.dir.name}" if len(sweep_dirs) > 1 else job.dir.name
            rows.append(Row(job, label, params, None))
    metric = metric or next((r.job.results["optimized_metric"]["name"] for r in rows
                             if (r.job.results or {}).get("optimized_metric", {}).get("name")), None)
    if not metric:
        raise UserError(f"{sweep_dirs[0]}: no job names its optimized_metric; pass --metric")
    for row in rows:
        value = row.metrics.get(metric) if row.job.status == "completed" else None
        row.value = value if value is not None and math.isfinite(value) else None
    keys = list(dict.fromkeys(k for row in rows for k in row.params))
    if len(rows) > 1:  # a key with one value in every job explains nothing
        keys = [k for k in keys if len({row.params.get(k) for row in rows}) > 1]
    return rows, metric, keys


def sweep_direction(sweep_dir: Path, metric: str) -> str:
    """The Optuna sweeper's direction when it set one, else by the metric's name (losses down, rest up)."""
    path = sweep_dir / "multirun.yaml"
    direction = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.direction", default=None) \
        if path.is_file() else None
    return resolve_direction(str(direction) if direction in ("maximize", "minimize", "max", "min") else "auto",
                             metric)


def rank(rows: list[Row], direction: str) -> list[Row]:
    """Best first; completed jobs without the metric next; pruned (Optuna) then failed jobs last (in job order)."""
    sign = -1.0 if direction == "maximize" else 1.0
    order = {"completed": 0, "pruned": 1}
    return sorted(rows, key=lambda r: (order.get(r.job.status, 2), r.value is None,
                                       sign * r.value if r.value is not None else 0.0))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def table(rows: list[Row], metric: str, keys: list[str]) -> tuple[list[str], list[list[Any]]]:
    metric_names = sorted({k for row in rows for k in row.metrics} - {metric})
    pruned = [PRUNED_AT] if any(row.job.status == "pruned" for row in rows) else []
    # sweep_keep=best removed the checkpoints and export of every trial but the best: say which
    files = ["checkpoints"] if any(REMOVED_KEY in (row.job.results or {}) for row in rows) else []
    header = ["job", "status", *keys, metric, *metric_names, *pruned, *files, "error"]
    body = [[row.label, row.job.status, *(row.params.get(k, "") for k in keys), row.value,
             *(row.metrics.get(m) for m in metric_names), *((row.job.results or {}).get(k) for k in pruned),
             *(("removed" if REMOVED_KEY in (row.job.results or {}) else "kept") for _ in files),
             (row.job.results or {}).get("error", "")]
            for row in rows]
    return header, body


def write_csv(path: Path, header: list[str], body: list[list[Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in line] for line in body])


def markdown(header: list[str], body: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, str) and re.fullmatch(r"-?\d*\.\d+(e-?\d+)?|-?\d+e-?\d+", value):
            value = float(value)  # sampled floats: 4 significant digits here, all of them in the CSV
        return _fmt(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in line) + " |" for line in body]
    return "\n".join(lines)


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_")


def _numbers(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def log_scale_keys(sweep_dirs: list[Path]) -> set[str]:
    """The keys an Optuna search sampled on a log scale (`tag(log, interval(...))`, in the sweeper's params or on
    the command line), read from each sweep's multirun.yaml; `+`/`++` prefixes dropped."""
    from hydra_plugins.lightning_llm_optuna.search_space import parse_search_space

    found = set()
    for sweep_dir in sweep_dirs:
        path = sweep_dir / "multirun.yaml"
        if not path.is_file():
            continue
        saved = OmegaConf.load(path)
        params = OmegaConf.select(saved, "hydra.sweeper.params", default=None) or {}
        overrides = [f"{k}={v}" for k, v in params.items()] + sweep_overrides(sweep_dir)
        try:
            space, _ = parse_search_space(overrides)
        except Exception:  # noqa: BLE001 - an override only Hydra's own sweeper understands: judge by values
            space = {}
        found |= {key.lstrip("+~") for key, dist in space.items() if getattr(dist, "log", False)}
    return found


def _is_log_key(key: str, xs: list[float], log_keys: set[str]) -> bool:
    """Log axis: searched on a log scale; else positive values of a learning rate, or spanning >= 20x."""
    if key.lstrip("+~") in log_keys:
        return True
    if not xs or min(xs) <= 0:
        return False
    name = key.rsplit(".", 1)[-1]
    return name in ("learning_rate", "lr") or name.endswith("_lr") or max(xs) / min(xs) >= 20


@dataclass
class ParamPoint:
    """A job in a metric-vs-parameter plot: completed (its value), pruned (its last report), else on the axis."""

    row: Row
    state: str  # a key of STYLES
    y: float | None


def _axis_values(values: list[str]) -> tuple[list[float], list[str] | None]:
    """Numbers as they are; anything else as category positions (and the categories)."""
    numbers = _numbers(values)
    if numbers is not None:
        return numbers, None
    categories = sorted(set(values))
    return [float(categories.index(v)) for v in values], categories


def metric_vs_param_figure(rows: list[Row], metric: str, key: str, keys: list[str], log_keys: set[str]) -> Any:
    """One scatter of the metric against `key`: every job with that parameter, completed ones at their value,
    pruned ones at their last report, failed or unfinished ones as marks on the x axis (each state its marker);
    coloured by the next swept parameter when there are several; the best job ringed by a hollow star drawn under
    the points. None when no job has the parameter."""
    import matplotlib.pyplot as plt
    from matplotlib import colors
    from matplotlib.lines import Line2D

    points = []
    for row in rows:
        if key not in row.params:
            continue
        status = row.job.status
        state = status if status in ("completed", "pruned") else \
            "unfinished" if status in ("running", "no results.json") else "failed"
        value = row.value if state == "completed" else (row.metrics.get(metric) if state == "pruned" else None)
        points.append(ParamPoint(row, state, value if value is not None and math.isfinite(value) else None))
    if not any(p.y is not None for p in points):
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    xs, categories = _axis_values([p.row.params[key] for p in points])
    if categories is not None:
        ax.set_xticks(range(len(categories)), categories)
    elif _is_log_key(key, xs, log_keys):
        ax.set_xscale("log")
    elif all(x.is_integer() for x in xs) and len(set(xs)) <= 12:
        ax.set_xticks(sorted(set(xs)))

    colour_key = next((k for k in keys if k != key), None)
    colour_of, norm, cmap = None, None, None
    if colour_key is not None:
        shades, shade_names = _axis_values([p.row.params.get(colour_key, "") for p in points])
        if shade_names is not None:  # categories: one colour each
            cmap = plt.get_cmap("tab10", max(len(shade_names), 1))
            norm = colors.BoundaryNorm([i - 0.5 for i in range(len(shade_names) + 1)], cmap.N)
        else:
            cmap = plt.get_cmap("viridis")
            log = _is_log_key(colour_key, shades, log_keys) and min(shades) > 0
            norm = (colors.LogNorm if log else colors.Normalize)(min(shades), max(shades))
        colour_of = dict(zip(map(id, points), shades))

    mappable, handles = None, []
    for state, (marker, colour) in STYLES.items():
        chosen = [(x, p) for x, p in zip(xs, points) if p.state == state]
        if not chosen:
            continue
        label = f"{state} ({len(chosen)})" + (", last report" if state == "pruned" else "")
        handles.append(Line2D([], [], marker=marker, linestyle="none", markersize=6, label=label,
                              color="dimgray" if colour_of else colour))
        edge = {"edgecolors": "black", "linewidths": 0.5} if colour_of and marker not in ("x", "+") else {}
        for valued in (True, False):
            part = [(x, p) for x, p in chosen if (p.y is not None) == valued]
            if not part:
                continue
            style = {"c": [colour_of[id(p)] for _, p in part], "cmap": cmap, "norm": norm} if colour_of else \
                {"color": colour}
            where = {} if valued else {"transform": ax.get_xaxis_transform(), "clip_on": False}
            # no value (failed, unfinished): x in data, y in axes coordinates, at the bottom
            drawn = ax.scatter([x for x, _ in part], [p.y if valued else 0.03 for _, p in part], marker=marker,
                               label=label, zorder=3, **where, **style, **edge)
            label = None
            mappable = mappable or (drawn if colour_of else None)
    # marks on the axis do not take part in autoscaling: their x values join the data limits here
    ax.update_datalim([(x, 0.0) for x in xs], updatey=False)
    ax.autoscale_view()
    best = next(((x, p) for x, p in zip(xs, points) if p.state == "completed" and p.y is not None), None)
    if best is not None:  # rows come best first; hollow and under the points, so it hides none of them
        ax.scatter([best[0]], [best[1].y], marker="*", s=450, facecolors="none", edgecolors="tab:red",
                   linewidths=1.5, zorder=2, label="best")
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=ax)
        bar.set_label(colour_key, fontsize=8)
        if shade_names is not None:
            bar.set_ticks(range(len(shade_names)), labels=shade_names)
    # a legend of small stand-ins: the states by marker (colour is the parameter's), the best's ring
    if best is not None:
        handles.append(Line2D([], [], marker="*", linestyle="none", markersize=11, markerfacecolor="none",
                              markeredgecolor="tab:red", label="best"))
    ax.legend(handles=handles, fontsize=7)
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {key} ({len(points)} jobs)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_metric_vs_params(rows: list[Row], metric: str, keys: list[str], out: Path,
                          log_keys: set[str] = frozenset()) -> list[Path]:
    """One PNG per swept key (`metric_vs_param_figure`)."""
    import matplotlib.pyplot as plt

    paths = []
    for key in keys:
        fig = metric_vs_param_figure(rows, metric, key, keys, log_keys)
        if fig is None:
            continue
        path = out / f"{_safe(metric)}_vs_{_safe(key)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def read_metrics_csv(job_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """{metric: [(step, value), ...]} from the job's csv logger (first metrics.csv under the job)."""
    found = sorted(job_dir.rglob("metrics.csv"))
    if not found:
        return {}
    curves: dict[str, list[tuple[float, float]]] = {}
    with open(found[0], newline="") as f:
        for record in csv.DictReader(f):
            step = float(record.get("step") or 0)
            for key, value in record.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    curves.setdefault(key, []).append((step, float(value)))
    return curves


def plot_learning_curves(rows: list[Row], metric: str, out: Path, top: int) -> Path | None:
    """train/loss and the validation curve behind the optimized metric (val/acc for val/acc_best) vs step."""
    import matplotlib.pyplot as plt

    best = [(r, read_metrics_csv(r.job.dir)) for r in rows if r.value is not None][:top]
    best = [(r, c) for r, c in best if c]
    if not best:
        return None
    val_key = metric.removesuffix("_best")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for row, curves in best:
        label = f"job {row.label} ({_fmt(row.value)})"
        for ax, key in zip(axes, ("train/loss", val_key if len(curves.get(val_key, [])) > 1 else metric)):
            points = curves.get(key, [])
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], marker="." if len(points) < 30 else None,
                        label=label)
            ax.set_title(key)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
    for ax in axes:  # one legend, on a panel that has curves (few steps may log no train/loss)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
            break
    fig.suptitle(f"learning curves of the best {len(best)} jobs")
    fig.tight_layout()
    path = out / "learning_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# How each state is drawn in the history: (marker, colour); values of failed/unfinished ones sit on the x axis.
STYLES = {"completed": ("o", "tab:blue"), "pruned": ("x", "tab:orange"), "failed": ("v", "tab:red"),
          "unfinished": ("s", "tab:gray")}


def plot_history(history: History, ylabel: str, path: Path) -> Path:
    """Objective per trial (pruned: its last report; failed: a mark on the axis) and the best so far."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for state, (marker, color) in STYLES.items():
        points = [p for p in history.points if p.state == state]
        if not points:
            continue
        label = f"{state} ({len(points)})" + (", last report" if state == "pruned" else "")
        valued = [p for p in points if p.value is not None]
        if valued:
            ax.scatter([p.number for p in valued], [p.value for p in valued], marker=marker, color=color, label=label)
            label = None
        unvalued = [p for p in points if p.value is None]
        if unvalued:  # x in data, y in axes coordinates: at the bottom, whatever the values' range
            ax.scatter([p.number for p in unvalued], [0.03] * len(unvalued), marker=marker, color=color,
                       transform=ax.get_xaxis_transform(), clip_on=False, label=label)
    best = [p for p in history.points if p.best is not None]
    if best:
        ax.step([p.number for p in best], [p.best for p in best], where="post", color="tab:green", label="best so far")
    ax.set_xlabel("trial" if history.study is not None else "job (in sweep order)")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{history.title}: {len(history.points)} {'trials' if history.study else 'jobs'}, "
                 f"{history.direction}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def history_section(history: History, plot: Path) -> tuple[list[str], str | None]:
    """The markdown of one history, and the line printed for a study (None for plain jobs)."""
    lines = ["", f"## Optimisation history: {history.title}", ""]
    lines += [f"- {note}" for note in history.notes]
    final = history.points[-1].best if history.points else None
    best = next((p for p in history.points if p.state == "completed" and p.value == final), None)
    if history.study is None:
        lines.append(f"- {len(history.points)} jobs ({history.counts()}); no stored Optuna study behind them, so "
                     "no parameter importances")
        return [*lines, "", f"![optimization history]({plot.name})"], None
    lines.append(f"- `{history.storage}`, {history.direction}: {len(history.points)} trials ({history.counts()}), "
                 f"{history.in_sweeps} of them in the sweep directories above"
                 + (f"; best trial #{best.number} = {_fmt(best.value)}" if best else ""))
    found, why = importances(history.study)
    if why:
        lines.append(f"- {why}")
        printed = why
    else:
        done = sum(p.state == "completed" for p in history.points)
        lines += [f"- parameter importances (Optuna, PED-ANOVA, from {done} completed trials):", "",
                  markdown(["parameter", "importance"], [[k, v] for k, v in found.items()])]
        printed = "importances " + ", ".join(f"{k} {v:.2f}" for k, v in found.items())
    lines += ["", f"![optimization history]({plot.name})"]
    return lines, f"{history.title}: {len(history.points)} trials ({history.counts()}); {printed}"


def write_report(*sweep_dirs: str | Path, metric: str | None = None, direction: str | None = None,
                 top: int = 3, out: str | Path | None = None) -> Path:
    """Write the report of one sweep, or of several together (e.g. the invocations of one resumed Optuna
    study), and return the markdown file's path."""
    matplotlib = require_extra("matplotlib", "report", "llm-report")  # plots
    matplotlib.use("Agg")  # files only, no display needed
    dirs = list({Path(d).resolve(): Path(d) for d in sweep_dirs}.values())  # a directory given twice: once
    for sweep_dir in dirs:
        if not sweep_dir.is_dir():
            raise UserError(f"{sweep_dir}: not a directory")
    rows, metric, keys = build_rows(dirs, metric)
    direction = resolve_direction(direction, metric) if direction else sweep_direction(dirs[0], metric)
    stories = histories([(r.job, r.value if r.job.status == "completed" else r.metrics.get(metric)) for r in rows],
                        direction)  # rows still in sweep and job order
    objective = next((r.job.results["optimized_metric"]["name"] for r in rows
                      if (r.job.results or {}).get("optimized_metric", {}).get("name")), metric)
    rows = rank(rows, direction)
    out = Path(out) if out else dirs[0] / "report"
    out.mkdir(parents=True, exist_ok=True)

    header, body = table(rows, metric, keys)
    write_csv(out / "report.csv", header, body)
    plots = plot_metric_vs_params(rows, metric, keys, out, log_scale_keys(dirs))
    curves = plot_learning_curves(rows, metric, out, top)
    sections, printed = [], []
    for history in stories:
        name = "optimization_history" + (f"_{_safe(history.title)}" if len(stories) > 1 else "") + ".png"
        plot = plot_history(history, objective if history.study is not None else metric, out / name)
        section, line = history_section(history, plot)
        sections += section
        printed += [line] if line else []
    failed = [r for r in rows if r.job.status not in ("completed", "pruned")]
    pruned = [r for r in rows if r.job.status == "pruned"]
    best = rows[0] if rows[0].value is not None else None
    lines = [f"# Sweep report: {', '.join(d.name for d in dirs)}", "",
             *(f"- sweep: `{d}`" for d in dirs),
             f"- {len(rows)} jobs, {len(pruned)} pruned, {len(failed)} failed; ranked by `{metric}` ({direction})"]
    if best:
        overrides = " ".join(f"{k}={v}" for k, v in best.params.items()) or "(no swept overrides)"
        lines.append(f"- best: job {best.label}, `{metric}` = {_fmt(best.value)}: `{overrides}`")
    removed = sum(REMOVED_KEY in (r.job.results or {}) for r in rows)
    if removed:
        lines.append(f"- checkpoints and hf_model/ of {removed} trial(s) removed (sweep_keep=best): column "
                     "`checkpoints`")
    lines += ["", markdown(header, body), ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    if curves:
        lines.append(f"![learning curves]({curves.name})")
    lines += sections
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    summary = f"best job {best.label}: {metric}={_fmt(best.value)}" if best else "no completed job"
    print(f"report: {len(rows)} jobs, {f'{len(pruned)} pruned, ' if pruned else ''}{len(failed)} failed, {summary} "
          f"-> {report} (+ report.csv, {len(plots) + bool(curves) + len(stories)} plots)")
    for line in printed:
        print(f"report: {line}")
    return report


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="llm-report", description=__doc__)
    parser.add_argument("sweep_dirs", nargs="+", metavar="sweep_dir",
                        help="multirun directories (outputs/<task_name>/multiruns/<timestamp>), reported together")
    parser.add_argument("--metric", help="rank by this metric (default: the jobs' optimized_metric)")
    parser.add_argument("--direction", choices=["maximize", "minimize"],
                        help="default: the Optuna sweeper's, else minimize losses/perplexities, maximize the rest")
    parser.add_argument("--top", type=int, default=3, help="learning curves of this many best jobs")
    parser.add_argument("--out", help="output directory (default: <first sweep_dir>/report)")
    args = parser.parse_args(argv)
    write_report(*args.sweep_dirs, metric=args.metric, direction=args.direction, top=args.top, out=args.out)



if __name__ == "__main__":
    main()
