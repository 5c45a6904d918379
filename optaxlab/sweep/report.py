"""Collect a sweep's points into results.csv, summary.md and plots.

    python -m optaxlab.sweep.report DIR

Reads DIR/sweep.json and every point's workdir (metrics.jsonl and the outcome files; see
optaxlab.sweep.outcome) and writes:

  DIR/results.csv   one row per point: the swept fields, seed, status, final and best train loss,
                    final and best eval loss / perplexity / accuracy, steps, timing, message
  DIR/summary.md    per group (e.g. per optimizer) the best setting of the tuned fields with its
                    mean +- std over seeds, the tuning budget and grid, a warning when the best
                    value sits on the edge of its grid, a ranking of the groups that says where
                    the seed spread makes two of them indistinguishable, failed points with the
                    end of their logs
  DIR/plots/*.png   learning-rate tuning curves, heatmaps over pairs of tuned fields, loss curves
                    of each group's best setting (optaxlab.sweep.plots)

How points are ranked: a point's score is `metric` (sweep.json; default final_eval_loss). A setting
of the tuned fields is scored by the mean over its seeds; a setting where any seed diverged counts
as worse than every finite one (divergence is a result: that setting is unusable). Failed, invalid
and unfinished points are left out of the means and listed.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optaxlab.sweep import outcome, stats
from optaxlab.sweep.spec import (
    METRIC_COLUMNS,
    Plan,
    Point,
    SweepError,
    format_value,
    read_plan,
)
from optaxlab.train import metrics as metrics_lib
from optaxlab.train.grouping import GROUP_JSON

# Columns after the swept fields. Timing columns differ between two runs of the same point.
# Cost: `train_s` is the measured training time of the program that ran the point (in a
# vectorized group of K members, the group's). The point's own cost is in one of two columns
# whose names say how it was obtained: `cost_s_measured` (a solo run: its own time) or
# `cost_s_apportioned` (a member of a group of K = `members`: 1/K of the group's time; every
# member of a group runs the same computation, and optimizers never share a group). The
# `target_*` columns: where the point first reached the sweep's target (empty if never), its
# seconds by the same two rules.
COST_COLUMNS = ("cost_s_measured", "cost_s_apportioned")
TARGET_COST_COLUMNS = ("target_s_measured", "target_s_apportioned")
COLUMNS = ("status", "step", "steps", "diverged_step", "exit_code", *METRIC_COLUMNS,
           "skipped_steps", "tokens_per_sec", "examples_per_sec", "train_s", "wall_s",
           "members", *COST_COLUMNS, "target_step", "target_tokens", *TARGET_COST_COLUMNS,
           "message", "workdir")
# Columns that differ between two runs of the same point: timings, and how it ran (solo or in a
# vectorized group of K).
TIMING_COLUMNS = ("tokens_per_sec", "examples_per_sec", "train_s", "wall_s", "members",
                  *COST_COLUMNS, *TARGET_COST_COLUMNS)
RESULTS_CSV, SUMMARY_MD, PLOTS_DIR = "results.csv", "summary.md", "plots"


def _finite(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def point_row(plan: Plan, point: Point, sweep_dir: Path) -> dict[str, Any]:
    """One results.csv row (values, not yet formatted) for a point."""
    wd = point.workdir(sweep_dir)
    state = outcome.point_state(wd, point.steps)
    records = metrics_lib.read_jsonl(wd / outcome.METRICS)
    losses = _finite([r.get("loss") for r in records])
    ev_loss = _finite([r.get("eval_loss") for r in records if "eval_loss" in r])
    ev_ppl = _finite([r.get("eval_perplexity") for r in records if "eval_perplexity" in r])
    ev_acc = _finite([r.get("eval_accuracy") for r in records if "eval_accuracy" in r])
    train_s, prev, elapsed = 0.0, None, {}  # elapsed: step -> training seconds so far
    per_step = None  # tokens (examples) one step of this point reads
    for r in records:
        sps = r.get("steps_per_sec")
        if prev is not None and isinstance(sps, (int, float)) and sps > 0:
            train_s += (r["step"] - prev) / sps
            unit = r.get("tokens_per_sec", r.get("examples_per_sec"))
            if isinstance(unit, (int, float)) and per_step is None:
                per_step = unit / sps
        prev = r.get("step", prev)
        if "step" in r:
            elapsed[r["step"]] = train_s
    members = (outcome.read_json(wd / GROUP_JSON) or {}).get("members") or 1
    reached = first_at_target(records, plan.target)
    row: dict[str, Any] = {"name": point.name, "group": point.group, "seed": point.seed,
                           **point.values, **hparam_columns(point)}
    row.update(
        status=state.status, step=state.step, steps=state.steps,
        diverged_step=state.diverged_step, exit_code=state.exit_code,
        final_train_loss=losses[-1] if losses else None,
        best_train_loss=min(losses) if losses else None,
        final_eval_loss=ev_loss[-1] if ev_loss else None,
        best_eval_loss=min(ev_loss) if ev_loss else None,
        final_eval_perplexity=ev_ppl[-1] if ev_ppl else None,
        best_eval_perplexity=min(ev_ppl) if ev_ppl else None,
        final_eval_accuracy=ev_acc[-1] if ev_acc else None,
        best_eval_accuracy=max(ev_acc) if ev_acc else None,
        skipped_steps=records[-1].get("skipped_steps") if records else None,
        tokens_per_sec=_median(_finite([r.get("tokens_per_sec") for r in records])),
        examples_per_sec=_median(_finite([r.get("examples_per_sec") for r in records])),
        train_s=round(train_s, 3) if train_s else None,
        wall_s=outcome.read_outcome(wd).get("wall_s"),
        members=members,
        **_cost(COST_COLUMNS, train_s if train_s else None, members),
        target_step=reached,
        target_tokens=round(reached * per_step) if reached and per_step else None,
        **_cost(TARGET_COST_COLUMNS, elapsed.get(reached) if reached else None, members),
        message=state.message, workdir=str(wd.relative_to(sweep_dir)),
    )
    return row


HPARAM_PREFIX = "hp."


def _cost(columns: tuple[str, str], seconds: float | None, members: int) -> dict[str, Any]:
    """{measured column: seconds} for a solo point, {apportioned column: seconds / K} for a
    member of a group of K; the other column empty."""
    measured, apportioned = columns
    if seconds is None:
        return {measured: None, apportioned: None}
    if members == 1:
        return {measured: round(seconds, 3), apportioned: None}
    return {measured: None, apportioned: round(seconds / members, 3)}


def point_cost(row: dict[str, Any], columns: tuple[str, str] = COST_COLUMNS) -> float | None:
    """A point's own cost in seconds, whichever way it was obtained."""
    for c in columns:
        if row.get(c) not in (None, ""):
            return float(row[c])
    return None


def first_at_target(records: Sequence[dict[str, Any]], target: dict[str, float] | None
                    ) -> int | None:
    """The first step whose record reached `target` ({key: value}: at most the value, at least
    it for an accuracy); None when no record did or there is no target."""
    if not target:
        return None
    (key, value), = target.items()
    higher = "accuracy" in key
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and (
                v >= value if higher else v <= value):
            return int(r["step"])
    return None


def hparam_columns(point: Point) -> dict[str, Any]:
    """The point's resolved optimizer block as results.csv columns `hp.<field>`."""
    return {f"{HPARAM_PREFIX}{k}": v for k, v in point.hparams.items()}


def _hparam_names(plan: Plan) -> list[str]:
    out: dict[str, None] = {}
    for p in plan.points:
        out.update(dict.fromkeys(hparam_columns(p)))
    return list(out)


def collect(plan: Plan, sweep_dir: Path) -> list[dict[str, Any]]:
    return [point_row(plan, p, sweep_dir) for p in plan.points]


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return repr(tuple(v))
    return str(v)


def write_csv(plan: Plan, rows: list[dict[str, Any]], path: Path) -> None:
    columns = ["name", "group", *plan.fields, *([] if "seed" in plan.fields else ["seed"]),
               *COLUMNS, *_hparam_names(plan)]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for row in rows:
            w.writerow([_csv_value(row.get(c)) for c in columns])
    tmp.replace(path)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------
# Tuning analysis.


def score(row: dict[str, Any], plan: Plan) -> float | None:
    """The point's metric (lower is better after the sign flip for 'max'); +inf if it diverged
    or stalled (never a result); None when it has no result (failed, invalid, unfinished)."""
    if row["status"] in (outcome.DIVERGED, outcome.STALLED):
        return math.inf
    if row["status"] != outcome.FINISHED:
        return None
    v = row.get(plan.metric)
    if v is None:
        return None  # finished without this metric (e.g. never evaluated): no result
    if not math.isfinite(v):
        return math.inf  # finished with a non-finite metric: as bad as diverged
    return float(v) if plan.goal == "min" else -float(v)


def _key(value: Any) -> str:
    return repr(value)


class Setting:
    """One setting of the tuned fields in a group, over its seeds."""

    def __init__(self, values: dict[str, Any]):
        self.values = values
        self.rows: list[dict[str, Any]] = []

    @property
    def scores(self) -> list[float]:
        return [s for s in (r["_score"] for r in self.rows) if s is not None]

    @property
    def diverged(self) -> int:
        return sum(r["status"] == outcome.DIVERGED for r in self.rows)

    @property
    def stalled(self) -> int:
        return sum(r["status"] == outcome.STALLED for r in self.rows)

    @property
    def finite(self) -> list[float]:
        return [s for s in self.scores if math.isfinite(s)]

    @property
    def mean(self) -> float | None:
        """Mean score (+inf if any seed diverged; None without results)."""
        s = self.scores
        if not s:
            return None
        return math.inf if any(math.isinf(x) for x in s) else statistics.fmean(s)

    @property
    def std(self) -> float | None:
        f = self.finite
        return statistics.stdev(f) if len(f) > 1 and len(f) == len(self.scores) else None


class Group:
    def __init__(self, name: str, plan: Plan):
        self.name = name
        self.plan = plan
        self.rows: list[dict[str, Any]] = []
        self.settings: dict[str, Setting] = {}

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        values = {f: row.get(f) for f in self.plan.tune}
        key = _key(tuple(values.values()))
        self.settings.setdefault(key, Setting(values)).rows.append(row)

    @property
    def best(self) -> Setting | None:
        ranked = [s for s in self.settings.values() if s.mean is not None]
        if not ranked:
            return None
        return min(ranked, key=lambda s: s.mean)

    def grid(self, field: str) -> list[Any]:
        """The values of `field` tried in this group (by points that have a result)."""
        vals = {_key(r.get(field)): r.get(field) for r in self.rows
                if r["status"] in (outcome.FINISHED, outcome.DIVERGED, outcome.STALLED)}
        out = list(vals.values())
        try:
            return sorted(out)
        except TypeError:
            return out

    def edge_warnings(self) -> list[str]:
        """Tuned numeric fields whose best value is the smallest or largest value tried."""
        best = self.best
        if best is None or best.mean is None or math.isinf(best.mean):
            return []
        out = []
        for f in self.plan.tune:
            grid = [v for v in self.grid(f) if isinstance(v, (int, float))
                    and not isinstance(v, bool)]
            v = best.values.get(f)
            if len(grid) < 2 or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            short = self.plan.short(f)
            if v == grid[0]:
                out.append(f"best {short}={format_value(v)} is the smallest value tried "
                           f"({short} in {_fmt_grid(grid)}): the optimum may lie below the "
                           "grid; extend it before comparing")
            elif v == grid[-1]:
                out.append(f"best {short}={format_value(v)} is the largest value tried "
                           f"({short} in {_fmt_grid(grid)}): the optimum may lie above the "
                           "grid; extend it before comparing")
        return out


def _fmt_grid(values: Sequence[Any]) -> str:
    return "{" + ", ".join(format_value(v) for v in values) + "}"


def groups_of(plan: Plan, rows: list[dict[str, Any]]) -> dict[str, Group]:
    groups: dict[str, Group] = {}
    for row in rows:
        row["_score"] = score(row, plan)
        groups.setdefault(row["group"], Group(row["group"], plan)).add(row)
    return groups


def _metric_text(plan: Plan, s: Setting | None) -> str:
    if s is None or s.mean is None:
        return "no result"
    if math.isinf(s.mean):
        parts = [f"{what} ({n}/{len(s.rows)} seeds)" for what, n in
                 (("diverged", s.diverged), ("stalled", s.stalled)) if n]
        return ", ".join(parts) or "non-finite metric"
    sign = 1.0 if plan.goal == "min" else -1.0
    n = len(s.scores)
    spread = f" ± {s.std:.2g}" if s.std is not None else ""
    return f"{sign * s.mean:.4g}{spread} (n={n})"


def _setting_text(plan: Plan, values: dict[str, Any]) -> str:
    """'lr=0.003, b1=0.9' (a tuned field another group's optimizer has, None here, left out)."""
    return ", ".join(f"{plan.short(f)}={format_value(v)}" for f, v in values.items()
                     if v is not None) or "-"


def _by_seed(s: Setting) -> dict[int, float]:
    return {int(r["seed"]): r["_score"] for r in s.rows
            if r.get("seed") is not None and r["_score"] is not None}


def compare(a: Setting, b: Setting) -> tuple[str, bool | None]:
    """How b compares with a better setting a: (text, indistinguishable?).

    Seeds pair: seed s reads the same batches (and starts from the same init) in every group, so
    the seeds both settings ran are compared by a paired t-test on the differences (Welch's
    unequal-variance t-test when they share fewer than two); indistinguishable when the 95%
    interval of the difference contains 0. With one seed on a side the spread is unknown.
    """
    if a.mean is None or b.mean is None or math.isinf(a.mean) or math.isinf(b.mean):
        return "", None
    c = stats.compare(_by_seed(a), _by_seed(b))
    if c is None:
        return f"+{b.mean - a.mean:.3g} (one seed: spread unknown)", None
    text = (f"+{c.diff:.3g} [{c.low:.3g}, {c.high:.3g}] ({c.kind}, n={c.n}, "
            f"p={c.p_value:.2g})")
    if c.low <= 0 <= c.high:
        need = f"; ~{c.seeds_needed} seeds per side would resolve it" if c.seeds_needed else ""
        return f"{text}: indistinguishable{need}", True
    return text, False


def budget_table(plan: Plan, groups: Sequence[Group]) -> list[str]:
    """The AlgoPerf external-tuning view: what each group's tuning protocol gives with the same
    number of trials (a trial: one setting of the tuned fields, scored by its mean over seeds)."""
    trials = {g.name: [s.mean for s in g.settings.values() if s.mean is not None]
              for g in groups}
    if len(groups) < 2 or min(map(len, trials.values())) < 2:
        return []
    n = min(map(len, trials.values()))
    budgets = sorted({b for b in (1, 2, 4, 8, 16, 32, n) if b <= n})
    sign = 1.0 if plan.goal == "min" else -1.0

    def fmt(b: stats.BestOf) -> str:
        if not math.isfinite(b.median):
            return "diverged"
        lo, hi = sorted((sign * b.low, sign * b.high))
        return f"{sign * b.median:.4g} [{lo:.4g}, {hi:.4g}]"

    lines = ["## Equal tuning budgets", "",
             f"Best {plan.metric} of N trials drawn with replacement from each group's "
             f"{'/'.join(str(len(t)) for t in trials.values())} trials (bootstrap median "
             "[95% interval]; a diverged trial loses), so groups compare at the same tuning "
             "effort.", "",
             "| group | trials | " + " | ".join(f"best of {b}" for b in budgets) + " |",
             "|---|---|" + "---|" * len(budgets)]
    for g in groups:
        cells = [fmt(stats.best_of_budget(trials[g.name], b)) for b in budgets]
        lines.append(f"| {g.name} | {len(trials[g.name])} | " + " | ".join(cells) + " |")
    leader = groups[0]
    lines.append("")
    for g in groups[1:]:
        p = stats.prob_best_of_budget_lower(trials[leader.name], trials[g.name], n)
        lines.append(f"- With {n} trials each, {leader.name} beats {g.name} in {p:.0%} of "
                     "draws.")
    return lines


def target_table(plan: Plan, groups: Sequence[Group]) -> list[str]:
    """Time to target per group: its fastest setting (every seed reached the target), ranked."""
    if not plan.target:
        return []
    (key, value), = plan.target.items()
    best: list[tuple[float, Group, Setting]] = []
    for g in groups:
        reached = [s for s in g.settings.values() if s.rows and all(
            r.get("target_step") is not None for r in s.rows)]
        if reached:
            s = min(reached, key=lambda s: statistics.fmean(r["target_step"] for r in s.rows))
            best.append((statistics.fmean(r["target_step"] for r in s.rows), g, s))
    lines = ["## Time to target", "",
             f"Target: {key} {'>=' if 'accuracy' in key else '<='} {format_value(value)}; per "
             "group its fastest setting whose every seed reached it (mean over seeds). "
             "Seconds are each point's own cost: measured for a solo run, apportioned (1/K of "
             "its group's time) for a member of a vectorized group of K (results.csv: "
             "`target_s_measured` / `target_s_apportioned`).", "",
             "| rank | group | setting | step | tokens | seconds |", "|---|---|---|---|---|---|"]
    for i, (steps, g, s) in enumerate(sorted(best, key=lambda t: t[0])):
        tokens = [r["target_tokens"] for r in s.rows if r.get("target_tokens") is not None]
        secs = [c for c in (point_cost(r, TARGET_COST_COLUMNS) for r in s.rows) if c is not None]
        how = {"apportioned" if r.get(TARGET_COST_COLUMNS[1]) is not None else "measured"
               for r in s.rows}
        sec_text = f"{statistics.fmean(secs):.3g} ({'/'.join(sorted(how))})" if secs else "-"
        lines.append(f"| {i + 1} | {g.name} | {_setting_text(plan, s.values)} | {steps:.4g} | "
                     f"{f'{statistics.fmean(tokens):.4g}' if tokens else '-'} | {sec_text} |")
    never = [g.name for g in groups if g not in [b[1] for b in best]]
    if never:
        lines += ["", f"Never reached with every seed: {', '.join(never)}."]
    return lines


def summary_markdown(plan: Plan, rows: list[dict[str, Any]], groups: dict[str, Group],
                     sweep_dir: Path, plots: Sequence[str]) -> str:
    counts = {s: sum(r["status"] == s for r in rows) for s in outcome.STATUSES}
    direction = "lower" if plan.goal == "min" else "higher"
    lines = [f"# Sweep `{plan.name}`", ""]
    lines.append(f"{len(rows)} points on `{Path(plan.config.split(':')[0]).name}` "
                 f"({', '.join(f'{n} {s}' for s, n in counts.items() if n)}); metric: "
                 f"`{plan.metric}` ({direction} is better; a setting is the mean over its seeds; "
                 "a setting with a diverged seed ranks below every finite one).")
    fixed = ", ".join(f"{k}={format_value(v)}" for k, v in plan.overrides.items())
    if plan.notes:
        lines += ["", "Hparams that differ from the base config: " + "; ".join(plan.notes)
                  + "."]
    lines += ["", f"Fixed overrides: {fixed or '-'}. Swept: "
              f"{', '.join(plan.short(f) for f in plan.fields) or '-'}; groups by "
              f"{', '.join(plan.short(f) for f in plan.group_by) or '- (one group)'}; tuned: "
              f"{', '.join(plan.short(f) for f in plan.tune) or '-'}.", ""]

    ranked = sorted(groups.values(), key=lambda g: (
        g.best is None, g.best.mean if g.best and g.best.mean is not None else math.inf))
    lines += ["## Ranking", "",
              f"| rank | group | best setting | {plan.metric} (mean ± std, n seeds) | "
              "vs. the best | vs. the next |", "|---|---|---|---|---|---|"]
    leader = ranked[0].best if ranked else None
    for i, g in enumerate(ranked):
        b = g.best
        vs_best = "-" if i == 0 or b is None or leader is None else (
            compare(leader, b)[0] or "-")
        nxt = ranked[i + 1].best if i + 1 < len(ranked) else None
        vs_next = compare(b, nxt)[0] if b is not None and nxt is not None else ""
        lines.append(f"| {i + 1} | {g.name} | {_setting_text(plan, b.values) if b else '-'} | "
                     f"{_metric_text(plan, b)} | {vs_best} | {vs_next or '-'} |")
    ties = []
    for i in range(len(ranked) - 1):
        a, b = ranked[i].best, ranked[i + 1].best
        if a is not None and b is not None and compare(a, b)[1]:
            ties.append(f"{ranked[i].name} and {ranked[i + 1].name}")
    if ties:
        lines += ["", "Indistinguishable at this number of seeds: " + "; ".join(ties) + "."]
    elif len(ranked) > 1:
        lines += ["", "No two neighbours in the ranking are indistinguishable (where a spread "
                  "could be measured)."]
    if len(ranked) > 1:
        lines += ["", "Differences are b - a in the metric with a 95% interval; seeds pair "
                  "across groups (seed s reads the same batches from the same initialization "
                  "everywhere): a paired t-test over the seeds both ran, Welch's t-test where "
                  "they share fewer than two."]
    budget = budget_table(plan, [g for g in ranked if g.best is not None])
    if budget:
        lines += ["", *budget]
    target = target_table(plan, ranked)
    if target:
        lines += ["", *target]

    for g in ranked:
        lines += ["", f"## {g.name}", ""]
        n_settings = len(g.settings)
        seeds = sorted({r.get("seed") for r in g.rows if r.get("seed") is not None})
        by_status = {s: sum(r["status"] == s for r in g.rows) for s in outcome.STATUSES}
        lines.append(f"Tuning budget: {len(g.rows)} points ({n_settings} setting(s) x "
                     f"{len(seeds) or 1} seed(s)): "
                     f"{', '.join(f'{n} {s}' for s, n in by_status.items() if n)}.")
        for f in plan.tune:
            lines.append(f"- grid of {plan.short(f)}: {_fmt_grid(g.grid(f))}")
        b = g.best
        if b is not None:
            lines += ["", f"Best: {_setting_text(plan, b.values)}: {_metric_text(plan, b)}."]
            hp = {k[len(HPARAM_PREFIX):]: v for k, v in b.rows[0].items()
                  if k.startswith(HPARAM_PREFIX)}
            if hp:
                lines += ["", "Its optimizer hparams: "
                          + ", ".join(f"{k}={format_value(v)}" for k, v in hp.items()) + "."]
        for w in g.edge_warnings():
            lines += ["", f"> **Warning:** {w}."]
        if plan.tune:
            lines += ["", f"| {' | '.join(plan.short(f) for f in plan.tune)} | {plan.metric} | "
                      "seeds | diverged / stalled at |", "|" + "---|" * (len(plan.tune) + 3)]
            for s in sorted(g.settings.values(), key=lambda s: [
                    (0, v) if isinstance(v, (int, float)) else (1, str(v))
                    for v in s.values.values()]):
                mark = " **(best)**" if s is b else ""
                div = ", ".join(
                    f"step {r['diverged_step']}" + (" (stalled)" if r["status"] ==
                                                     outcome.STALLED else "")
                    for r in s.rows if r["status"] in (outcome.DIVERGED, outcome.STALLED)) or "-"
                cells = " | ".join(format_value(v) for v in s.values.values())
                lines.append(f"| {cells} | {_metric_text(plan, s)}{mark} | {len(s.rows)} | "
                             f"{div} |")

    bad = [r for r in rows if r["status"] in (outcome.FAILED, outcome.INVALID)]
    if bad:
        lines += ["", "## Failed and invalid points", ""]
        for r in bad:
            code = f"exit {r['exit_code']}" if r.get("exit_code") is not None else "no exit code"
            lines.append(f"- `{r['name']}`: {r['status']} ({code}): {r['message']}")
            tail = outcome.read_outcome(Path(sweep_dir) / r["workdir"]).get("log_tail") or \
                outcome.last_attempt_log(Path(sweep_dir) / r["workdir"])[-outcome.LOG_TAIL:]
            if r["status"] == outcome.FAILED and tail:
                lines += ["", "  ```", *(f"  {t}" for t in tail[-8:]), "  ```"]
    unfinished = [r for r in rows if r["status"] in (outcome.INTERRUPTED, outcome.PENDING,
                                                     outcome.RUNNING)]
    if unfinished:
        lines += ["", f"Not finished ({len(unfinished)}): "
                  + ", ".join(f"`{r['name']}` ({r['status']}, step {r['step']})"
                              for r in unfinished[:20])
                  + (" ..." if len(unfinished) > 20 else "")
                  + ". Rerun the sweep command to run or resume them."]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def write_report(sweep_dir: str | Path, *, plots: bool = True, quiet: bool = False
                 ) -> dict[str, Path]:
    """results.csv, summary.md and the plots of the sweep in `sweep_dir`; returns their paths."""
    sweep_dir = Path(sweep_dir)
    plan = read_plan(sweep_dir)
    rows = collect(plan, sweep_dir)
    out = {"results": sweep_dir / RESULTS_CSV, "summary": sweep_dir / SUMMARY_MD}
    write_csv(plan, rows, out["results"])
    groups = groups_of(plan, rows)
    written: list[str] = []
    if plots:
        from optaxlab.sweep import plots as plots_lib

        for path in plots_lib.write_all(plan, rows, groups, sweep_dir, sweep_dir / PLOTS_DIR):
            written.append(str(Path(path).relative_to(sweep_dir)))
            out[Path(path).stem] = Path(path)
    text = summary_markdown(plan, rows, groups, sweep_dir, written)
    tmp = out["summary"].with_name(f".{SUMMARY_MD}.tmp")
    tmp.write_text(text)
    tmp.replace(out["summary"])
    if not quiet:
        print(f"wrote {out['results']}, {out['summary']}"
              + (f" and {len(written)} plot(s) in {sweep_dir / PLOTS_DIR}" if written else ""))
    return out


def best_so_far(plan: Plan, rows: list[dict[str, Any]]) -> dict[str, tuple[float, str]]:
    """group -> (best metric value among its finished points, point name): for progress lines."""
    out: dict[str, tuple[float, str]] = {}
    for r in rows:
        s = score(r, plan)
        if s is None or math.isinf(s):
            continue
        if r["group"] not in out or s < out[r["group"]][0]:
            out[r["group"]] = (s, r["name"])
    sign = 1.0 if plan.goal == "min" else -1.0
    return {g: (sign * v, n) for g, (v, n) in out.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m optaxlab.sweep.report",
                                     description="results.csv, summary.md and plots of a sweep")
    parser.add_argument("workdir", help="the sweep's --workdir (holds sweep.json)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)
    try:
        write_report(args.workdir, plots=not args.no_plots)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
