"""Sweep files: grids, names, groups, and field validation against the base config."""

import json

import pytest

from optaxlab.sweep import SweepError, log_grid, product, resolve, sweep, zipped
from optaxlab.sweep.driver import select
from optaxlab.sweep.spec import check_against_disk, load_sweep_file, read_plan, write_plan

CONFIG = "optaxlab/configs/lm_tiny.py"


def test_log_grid_is_one_line_and_readable():
    assert log_grid(1e-4, 1e-2, per_decade=2) == [1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2]
    assert log_grid(1e-3, 1e-1, 3) == [1e-3, 1e-2, 1e-1]
    assert log_grid(3e-4, 3e-4, 1) == [3e-4]
    assert log_grid(1e-4, 1e-2, per_decade=1, digits=1) == [1e-4, 1e-3, 1e-2]
    # A rounded half-decade endpoint (3.16 ~ sqrt(10)) does not shift the decades off 1, 10, ...
    assert log_grid(1e-2, 3.16, per_decade=2) == [0.01, 0.0316, 0.1, 0.316, 1.0, 3.16]
    assert log_grid(3.16e-5, 1e-2, per_decade=2)[:2] == [3.16e-5, 1e-4]
    assert log_grid(1e-1, 1e-3, per_decade=1) == [0.1, 0.01, 0.001]
    for bad in [dict(start=0.0, stop=1.0, num=3), dict(start=1e-3, stop=1e-1),
                dict(start=1e-3, stop=1e-1, num=3, per_decade=1)]:
        with pytest.raises(SweepError):
            log_grid(**bad)


def test_product_zipped_and_explicit_lists_combine():
    grid = product({"a": [1, 2], "b": ["x", "y"]})
    assert grid == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"},
                    {"a": 2, "b": "y"}]
    z = zipped({"b1": [0.9, 0.95], "b2": [0.95, 0.99]})
    assert z == [{"b1": 0.9, "b2": 0.95}, {"b1": 0.95, "b2": 0.99}]
    assert product({"lr": [1, 2]}, z) == [{"lr": 1, **z[0]}, {"lr": 1, **z[1]},
                                          {"lr": 2, **z[0]}, {"lr": 2, **z[1]}]
    assert product({"a": [1]}) + [{"a": 5}] == [{"a": 1}, {"a": 5}]
    with pytest.raises(SweepError, match="different lengths"):
        zipped({"a": [1, 2], "b": [1]})
    with pytest.raises(SweepError, match="more than one part"):
        product({"a": [1]}, [{"a": 2}])
    with pytest.raises(SweepError, match="must be a list"):
        product({"a": "adam"})


def optimizer_lr_sweep(**kw):
    return sweep(config=CONFIG, overrides={"steps": 20, "monitor.every": 0},
                 points=product({"optimizer.name": ["adam", "signum"],
                                 "optimizer.learning_rate": [1e-3, 3.16e-3]}),
                 seeds=[0, 1], **kw)


def test_resolve_names_groups_and_trainer_arguments():
    plan = resolve(optimizer_lr_sweep())
    names = [p.name for p in plan.points]
    assert names[:3] == ["optimizer=adam,lr=0.001,seed=0", "optimizer=adam,lr=0.001,seed=1",
                         "optimizer=adam,lr=0.00316,seed=0"]
    assert len(set(names)) == len(names) == 8
    assert plan.fields == ["optimizer.name", "optimizer.learning_rate", "seed"]
    assert plan.group_by == ["optimizer.name"] and plan.tune == ["optimizer.learning_rate"]
    assert {p.group for p in plan.points} == {"optimizer=adam", "optimizer=signum"}
    assert plan.metric == "final_eval_loss" and plan.goal == "min"
    p = plan.points[-1]
    assert p.values == {"optimizer.name": "signum", "optimizer.learning_rate": 3.16e-3,
                        "seed": 1}
    assert p.steps == 20 and p.seed == 1
    assert "--config.optimizer.name=signum" in p.args
    assert "--config.optimizer.learning_rate=0.00316" in p.args
    assert "--config.seed=1" in p.args and "--config.steps=20" in p.args
    assert "--config.progress_bar=false" in p.args  # the log is a file: no progress bar
    # A point's name depends only on its own values: extending the grid keeps the old names.
    bigger = resolve(sweep(config=CONFIG, points=product({
        "optimizer.name": ["adam", "signum", "sgd"],
        "optimizer.learning_rate": [1e-4, 1e-3, 3.16e-3]}), seeds=[0, 1, 2],
        overrides={"steps": 20, "monitor.every": 0}))
    assert set(names) <= {q.name for q in bigger.points}


def one_line_error(spec) -> str:
    with pytest.raises(SweepError) as info:
        resolve(spec)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_bad_fields_are_named_with_the_valid_ones_before_anything_runs():
    msg = one_line_error(sweep(config=CONFIG, points=[{"optimizer.lr": 1e-3}]))
    assert "'optimizer.lr'" in msg and "learning_rate" in msg and "b2" in msg
    msg = one_line_error(sweep(config=CONFIG, points=[{"stepz": 10}]))
    assert "'stepz'" in msg and "valid:" in msg and "steps" in msg and "seed" in msg
    msg = one_line_error(sweep(config=CONFIG, points=[{"model.d_modle": 8}]))
    assert "config.model" in msg and "d_model" in msg
    # An hparam the point's own optimizer does not have (signum has no b2).
    msg = one_line_error(sweep(config=CONFIG, points=product(
        {"optimizer.name": ["adam", "signum"], "optimizer.b2": [0.99]})))
    assert "b2" in msg and "signum" in msg and "valid keywords:" in msg and "beta" in msg
    msg = one_line_error(sweep(config=CONFIG, points=[{"optimizer.name": "adamm"}]))
    assert "adamm" in msg and "signum" in msg
    msg = one_line_error(sweep(config=CONFIG, points=[{"steps": "many"}]))
    assert "steps='many'" in msg
    msg = one_line_error(sweep(config=CONFIG, points=[{"model": 3}]))
    assert "block" in msg
    assert "both swept" in one_line_error(sweep(config=CONFIG, points=[{"steps": 5}],
                                                overrides={"steps": 6}))
    assert "seed" in one_line_error(sweep(config=CONFIG, points=[{"seed": 1}], seeds=[0]))
    assert "group_by" in one_line_error(optimizer_lr_sweep(group_by=["optimizer.b1"]))
    assert "metric='eval'" in one_line_error(optimizer_lr_sweep(metric="eval"))
    assert "not found" in one_line_error(sweep(config="nope"))


def test_sweep_file_and_plan_round_trip(tmp_path):
    path = tmp_path / "s.py"
    path.write_text("from optaxlab.sweep import sweep\n"
                    "def get_sweep():\n"
                    "    return sweep(config='optaxlab/configs/lm_tiny.py', points=[{'seed': 3}],"
                    " bogus=1)\n")
    with pytest.raises(SweepError, match=r"get_sweep\(\) failed: TypeError: .*'bogus' "
                       r"\(in s.py, line 3\)"):
        load_sweep_file(path)
    path.write_text("def get_sweep(:\n")
    with pytest.raises(SweepError, match=r"SyntaxError: .* \(line 1\)"):
        load_sweep_file(path)
    path.write_text("def get_sweep():\n    return {'config': 'lm_tiny', 'pointz': []}\n")
    with pytest.raises(SweepError, match="'pointz' is unknown; valid: config, goal"):
        load_sweep_file(path)
    # The base config is found next to the sweep file or in its parents (sweeps/x.py).
    path.write_text("from optaxlab.sweep import sweep, zipped\n"
                    "def get_sweep():\n"
                    "    return sweep(config='optaxlab/configs/lm_tiny.py', points=zipped("
                    "{'optimizer.b1': [0.9, 0.8], 'optimizer.b2': [0.95, 0.99]}))\n")
    plan = resolve(load_sweep_file(path), path)
    assert [p.name for p in plan.points] == ["b1=0.9,b2=0.95", "b1=0.8,b2=0.99"]
    assert plan.heatmaps == [["optimizer.b1", "optimizer.b2"]]
    write_plan(plan, tmp_path / "run")
    again = read_plan(tmp_path / "run")
    assert again == plan
    point = json.loads((tmp_path / "run" / "points" / "b1=0.8,b2=0.99" / "point.json")
                       .read_text())
    assert point["command"][-2:] == ["--config.optimizer.b1=0.8", "--config.optimizer.b2=0.99"]
    assert check_against_disk(plan, tmp_path / "run") == []
    # The same folder with different settings is refused: nothing would be mixed or replaced.
    changed = resolve({**load_sweep_file(path), "overrides": {"steps": 7}}, path)
    with pytest.raises(SweepError, match=r"made with different settings \(- -> "
                       r"--config.steps=7\)"):
        check_against_disk(changed, tmp_path / "run")



def test_a_point_config_is_built_once_and_a_plan_from_disk_builds_the_same(tmp_path, monkeypatch):
    # resolve builds each point's full config; check_points validates those (no second build);
    # a plan read back from sweep.json (resume) has no configs and builds equal ones.
    from optaxlab.sweep import spec as spec_lib

    plan = resolve(optimizer_lr_sweep())
    assert set(plan.configs) == {p.name for p in plan.points}
    assert "configs" not in plan.to_json()
    built = []
    original = spec_lib.point_config
    monkeypatch.setattr(spec_lib, "point_config",
                        lambda *a, **k: built.append(a[-1]) or original(*a, **k))
    configs = spec_lib.check_points(plan, num_devices=1)
    assert built == [] and all(configs[n] is plan.configs[n] for n in configs)
    write_plan(plan, tmp_path / "run")
    again = read_plan(tmp_path / "run")
    assert again.configs == {}
    rebuilt = spec_lib.check_points(again, num_devices=1)
    assert sorted(built) == sorted(p.name for p in plan.points)
    assert {n: c.to_dict() for n, c in rebuilt.items()} == \
        {n: c.to_dict() for n, c in configs.items()}

def test_only_filters_and_index():
    plan = resolve(optimizer_lr_sweep())
    names = lambda pts: [p.name for p in pts]
    assert names(select(plan, ["optimizer=signum,lr=0.001"])) == [
        "optimizer=signum,lr=0.001,seed=0", "optimizer=signum,lr=0.001,seed=1"]
    assert names(select(plan, ["optimizer.name=adam,seed=1,lr=0.003*"])) == [
        "optimizer=adam,lr=0.00316,seed=1"]
    assert len(select(plan, ["seed=0", "optimizer=signum"])) == 6  # repeated --only: OR
    assert names(select(plan, ["*signum*seed=1"])) == [
        "optimizer=signum,lr=0.001,seed=1", "optimizer=signum,lr=0.00316,seed=1"]
    assert names(select(plan, [], [2])) == ["optimizer=adam,lr=0.00316,seed=0"]
    with pytest.raises(SweepError, match="unknown field 'beta'; valid: lr, optimizer, "):
        select(plan, ["beta=1"])
    with pytest.raises(SweepError, match="no point matches"):
        select(plan, ["optimizer=sgd"])
    with pytest.raises(SweepError, match="points 0..7"):
        select(plan, [], [8])
