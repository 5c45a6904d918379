"""results.csv, summary.md and plots from point workdirs with known contents (the trainer's
file formats: metrics.jsonl records, checkpoints/<step>/, exit_code, train.log)."""

import json
import math
from pathlib import Path

import matplotlib.image
import pytest

from optaxlab.sweep import outcome, product, resolve, sweep
from optaxlab.sweep.report import read_csv, write_report
from optaxlab.sweep.spec import write_plan

STEPS = 20
OFFSETS = (-0.01, 0.0, 0.01)  # per seed: std over three seeds = 0.01


def fake_point(wd: Path, final_eval: float | None, *, status="finished", step=STEPS):
    """A point folder as the trainer and the runner leave it."""
    records = []
    for s in range(1, step + 1):
        r = {"step": s, "loss": 5.0 - (5.0 - (final_eval or 3.0) - 0.1) * s / STEPS,
             "tokens_per_sec": 1000.0 + s, "steps_per_sec": 10.0, "skipped_steps": 0}
        if s in (10, 20) and status == "finished":
            r["eval_loss"] = final_eval + (0.3 if s == 10 else 0.0)
            r["eval_perplexity"] = math.exp(r["eval_loss"])
        records.append(r)
    (wd / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    log = [outcome.ATTEMPT_HEADER + " at t <=="]
    if status == "finished":
        (wd / "checkpoints" / str(STEPS)).mkdir(parents=True)
        code = 0
    elif status == "diverged":
        code = 3
        log.append(f"error: non-finite loss (nan) at step {step + 1}; nan_policy='halt' "
                   "stopped the run")
    else:
        code = 1
        log += ["Traceback (most recent call last):", "RuntimeError: boom"]
    (wd / "train.log").write_text("\n".join(log) + "\n")
    outcome.record_attempt(wd, wd.name, STEPS, {"wall_s": 2.0, "exit_code": code}, code)


# adam: best lr 3e-3 inside its grid; signum: best at the grid's smallest lr, 0.005 behind
# adam (within 2 standard errors of 0.01-std seeds); one adam seed diverges at 1e-2, one
# signum point fails.
CURVES = {"adam": {1e-3: 3.0, 3e-3: 2.5, 1e-2: 2.7}, "signum": {1e-3: 2.505, 3e-3: 2.6,
                                                                 1e-2: 2.8}}



def clear_point(wd: Path) -> None:
    """Remove what fake_point wrote, so it can write the point again."""
    for name in ("metrics.jsonl", "checkpoints", "outcome.json", "exit_code", "train.log"):
        path = wd / name
        if path.is_dir():
            (path / str(STEPS)).rmdir()
            path.rmdir()
        else:
            path.unlink()


@pytest.fixture
def grid_sweep(tmp_path):
    plan = resolve(sweep(config="lm_tiny", overrides={"steps": STEPS},
                         points=product({"optimizer.name": ["adam", "signum"],
                                         "optimizer.learning_rate": [1e-3, 3e-3, 1e-2]}),
                         seeds=[0, 1, 2], name="synthetic"))
    write_plan(plan, tmp_path)
    for p in plan.points:
        opt, lr, seed = (p.values[f] for f in plan.fields)
        # the seeds' offsets differ by group: pairing by seed does not cancel them
        value = CURVES[opt][lr] + OFFSETS[seed if opt == "adam" else (seed + 1) % 3]
        if (opt, lr, seed) == ("adam", 1e-2, 2):
            fake_point(p.workdir(tmp_path), None, status="diverged", step=6)
        elif (opt, lr, seed) == ("signum", 1e-2, 2):
            fake_point(p.workdir(tmp_path), None, status="failed", step=4)
        else:
            fake_point(p.workdir(tmp_path), value)
    return plan, tmp_path


def test_results_csv_has_every_point_with_its_metrics(grid_sweep):
    plan, root = grid_sweep
    out = write_report(root, quiet=True)
    rows = {r["name"]: r for r in read_csv(out["results"])}
    assert len(rows) == 18
    r = rows["optimizer=adam,lr=0.003,seed=0"]
    assert r["group"] == "optimizer=adam" and r["optimizer.name"] == "adam"
    assert float(r["optimizer.learning_rate"]) == 3e-3 and r["seed"] == "0"
    assert r["status"] == "finished" and r["step"] == "20" and r["steps"] == "20"
    records = [json.loads(x) for x in (root / r["workdir"] / "metrics.jsonl").read_text()
               .splitlines()]
    assert float(r["final_eval_loss"]) == records[-1]["eval_loss"] == 2.49
    assert float(r["best_eval_loss"]) == 2.49
    assert float(r["final_eval_perplexity"]) == pytest.approx(math.exp(2.49))
    assert float(r["final_train_loss"]) == records[-1]["loss"]
    assert float(r["best_train_loss"]) == min(x["loss"] for x in records)
    assert float(r["tokens_per_sec"]) == 1010.5 and float(r["wall_s"]) == 2.0
    assert float(r["train_s"]) == pytest.approx(1.9)
    assert r["final_eval_accuracy"] == "" and r["exit_code"] == "0"
    d = rows["optimizer=adam,lr=0.01,seed=2"]
    assert (d["status"], d["diverged_step"], d["step"]) == ("diverged", "7", "6")
    f = rows["optimizer=signum,lr=0.01,seed=2"]
    assert (f["status"], f["exit_code"], f["message"]) == ("failed", "1", "RuntimeError: boom")


def test_summary_best_setting_grid_edge_and_ranking(grid_sweep):
    plan, root = grid_sweep
    text = write_report(root, quiet=True)["summary"].read_text()
    adam = text[text.index("## optimizer=adam"):text.index("## optimizer=signum")]
    signum = text[text.index("## optimizer=signum"):text.index("## Failed")]
    assert "Best: lr=0.003: 2.5 ± 0.01 (n=3)" in adam
    assert "Warning" not in adam  # 3e-3 lies inside {0.001, 0.003, 0.01}
    assert "diverged (1/3 seeds)" in adam and "step 7" in adam
    assert "Tuning budget: 9 points (3 setting(s) x 3 seed(s)): 8 finished, 1 diverged" in adam
    assert "Best: lr=0.001: 2.505 ± 0.01 (n=3)" in signum
    assert "best lr=0.001 is the smallest value tried (lr in {0.001, 0.003, 0.01})" in signum
    assert "| 0.01 | 2.805 ± 0.0071 (n=2) | 3 | - |" in signum  # failed seed left out
    ranking = text[text.index("## Ranking"):text.index("## optimizer=adam")]
    assert "| 1 | optimizer=adam | lr=0.003 |" in ranking
    assert "| 2 | optimizer=signum | lr=0.001 |" in ranking
    assert "indistinguishable" in ranking
    assert "Indistinguishable at this number of seeds: optimizer=adam and optimizer=signum" \
        in ranking
    assert "`optimizer=signum,lr=0.01,seed=2`: failed (exit 1): RuntimeError: boom" in text
    assert "RuntimeError: boom" in text[text.index("## Failed"):]


def test_ranking_separates_groups_beyond_the_seed_spread(grid_sweep):
    plan, root = grid_sweep
    for seed in range(3):  # signum's best 0.1 behind adam: far beyond 2 standard errors
        wd = root / "points" / f"optimizer=signum,lr=0.001,seed={seed}"
        clear_point(wd)
        fake_point(wd, 2.6 + OFFSETS[seed])
    text = write_report(root, plots=False, quiet=True)["summary"].read_text()
    assert "No two neighbours in the ranking are indistinguishable" in text
    assert "Indistinguishable at" not in text and ": indistinguishable" not in text
    # seed s of both groups is offset alike: the paired differences are exactly 0.1
    assert "| 2 | optimizer=signum | lr=0.001 | 2.6 ± 0.01 (n=3) | +0.1 [0.1, 0.1] (paired, " \
        "n=3, p=0) |" in text


def png(path: Path):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    return image


def test_plots(grid_sweep, tmp_path):
    plan, root = grid_sweep
    out = write_report(root, quiet=True)
    png(out["lr_tuning"])
    png(out["best_curves"])
    assert "![lr_tuning](plots/lr_tuning.png)" in out["summary"].read_text()
    # b1 x b2 heatmap at the best lr: one seed, one group.
    betas = resolve(sweep(config="lm_tiny", overrides={"steps": STEPS},
                          points=product({"optimizer.b1": [0.8, 0.9],
                                          "optimizer.b2": [0.9, 0.95, 0.99],
                                          "optimizer.learning_rate": [1e-3, 3e-3]})))
    assert betas.heatmaps == [["optimizer.b1", "optimizer.b2"]]
    write_plan(betas, tmp_path / "betas")
    for p in betas.points:
        b1, b2, lr = (p.values[f] for f in betas.fields)
        fake_point(p.workdir(tmp_path / "betas"), 3.0 - b1 + abs(b2 - 0.95) - lr * 10)
    out = write_report(tmp_path / "betas", quiet=True)
    png(out["heatmap_b1_b2"])
    assert {r["seed"] for r in read_csv(out["results"])} == {"0"}  # a column even unswept
    assert "Best: b1=0.9, b2=0.95, lr=0.003: 2.07 (n=1)" in out["summary"].read_text()


def test_a_blown_up_point_does_not_flatten_the_tuning_curves(grid_sweep, monkeypatch):
    """Adam at a huge lr "finishing" at 1.4e5 (no NaN, so not diverged) beside losses of ~2.5:
    the y axis still shows the bulk, the blown-up point is marked at the top edge."""
    from optaxlab.sweep import plots

    plan, root = grid_sweep
    wd = root / "points" / "optimizer=adam,lr=0.01,seed=0"
    clear_point(wd)
    fake_point(wd, 500.0)  # (the Adam at lr 100 of the comparisons issue: 1.4e5)
    limits = []
    close = plots.plt.close
    monkeypatch.setattr(plots.plt, "close",
                        lambda fig=None: (limits.append(fig.axes[0].get_ylim()
                                                        if fig is not None and fig.axes else None),
                                          close(fig)))
    out = write_report(root, quiet=True)
    png(out["lr_tuning"])
    low, high = limits[0]
    assert 2.0 < low < 2.6 and high < 10  # not stretched to 500
