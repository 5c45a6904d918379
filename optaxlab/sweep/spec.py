"""Sweep files and their resolution into points.

A sweep file is a Python file with `get_sweep()` (the ml_collections convention of configs):

    from optaxlab.sweep import log_grid, product, sweep

    def get_sweep():
        return sweep(
            config="lm_tiny",  # the base training config: a shipped name or a file
            overrides={"steps": 300, "monitor.every": 0},  # applied to every point
            points=product({"optimizer.name": ["adam", "signum"],
                            "optimizer.learning_rate": log_grid(1e-4, 1e-2, per_decade=2)}),
            seeds=[0, 1])

`points` is a list of {field: value} dicts over any config fields (dotted, as on the trainer's
command line): `product` (a grid), `zipped` (fields that move together), an explicit list, or sums
of those (lists concatenate). `seeds` repeats every point for each seed.

`resolve` checks every field against the base config (as the trainer would build it, including an
`optimizer.name` switch) before anything runs, and turns the sweep into a `Plan`: one `Point` per
run with a stable, readable name (`optimizer=adam,lr=0.001,seed=0`), its group (the points a
report compares, e.g. one per optimizer), the exact trainer arguments and its workdir.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import itertools
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from optaxlab.sweep import outcome

# Short names used in point names, summaries and --only filters (the last path component is the
# default short name; these read better).
SHORT_NAMES = {"optimizer.name": "optimizer", "optimizer.learning_rate": "lr",
               "optimizer.weight_decay": "wd", "optimizer.warmup_fraction": "warmup"}
LR_FIELD = "optimizer.learning_rate"
MAX_NAME = 120  # longer point names become a truncated slug + a hash
POINTS_DIR = "points"
SWEEP_JSON = "sweep.json"
POINT_JSON = "point.json"
GOALS = ("min", "max")
# The results.csv columns a sweep can rank by (report.py writes them).
METRIC_COLUMNS = ("final_train_loss", "best_train_loss", "final_eval_loss", "best_eval_loss",
                  "final_eval_perplexity", "best_eval_perplexity", "final_eval_accuracy",
                  "best_eval_accuracy")


class SweepError(ValueError):
    """A bad sweep file or argument: one line, naming the bad value and what is valid."""


# ---------------------------------------------------------------------------------------------
# Building blocks for sweep files.


def log_grid(start: float, stop: float, num: int | None = None, *,
             per_decade: float | None = None, digits: int = 3) -> list[float]:
    """Log-spaced values from `start` to `stop` (both included), rounded to `digits` significant
    digits (so names and configs read 0.00316, not 0.0031622776601683794).

    Give either `num` (number of values) or `per_decade` (values per factor of 10), e.g.
    `log_grid(1e-4, 1e-2, per_decade=2)` -> [0.0001, 0.000316, 0.001, 0.00316, 0.01].
    """
    if not (start > 0 and stop > 0 and math.isfinite(start) and math.isfinite(stop)):
        raise SweepError(f"log_grid({start!r}, {stop!r}): start and stop must be finite and > 0")
    if (num is None) == (per_decade is None):
        raise SweepError("log_grid: give exactly one of num= or per_decade=")
    lo, hi = math.log10(start), math.log10(stop)
    if num is None:
        if not per_decade > 0:
            raise SweepError(f"log_grid: per_decade={per_decade!r} must be > 0")
        num = int(round(abs(hi - lo) * per_decade)) + 1
    if not isinstance(num, int) or num < 1:
        raise SweepError(f"log_grid: num={num!r} must be a positive int")
    if num == 1:
        return [_round(start, digits)]
    if per_decade is None:
        logs = [lo + (hi - lo) * i / (num - 1) for i in range(num)]
    else:  # exact steps of 1/per_decade from the rounder endpoint (3.16 is sqrt(10) rounded:
        # stepping from it would give 0.999 for 1), the other endpoint as given
        step = math.copysign(1.0 / per_decade, hi - lo)
        if _significant_digits(stop) < _significant_digits(start):
            logs = [hi - (num - 1 - i) * step for i in range(num)]
            logs[0] = lo
        else:
            logs = [lo + i * step for i in range(num)]
            logs[-1] = hi
    return [_round(10 ** x, digits) for x in logs]


def _significant_digits(x: float) -> int:
    return len(f"{x:.15g}".split("e")[0].replace(".", "").replace("-", "").strip("0"))


def _round(x: float, digits: int) -> float:
    return float(f"{x:.{digits}g}")


def product(*parts: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]
            ) -> list[dict[str, Any]]:
    """The cross product of grids and point lists.

    Each part is a dict {field: [values]} (a grid over those fields) or a list of point dicts
    (from `zipped`, another `product` or written out). A field may appear in only one part.
    """
    lists = []
    for part in parts:
        if isinstance(part, Mapping):
            fields = list(part)
            for f in fields:
                if isinstance(part[f], (str, bytes)) or not isinstance(part[f], Iterable):
                    raise SweepError(f"product: {f}={part[f]!r} must be a list of values")
            lists.append([dict(zip(fields, combo, strict=True))
                          for combo in itertools.product(*(list(part[f]) for f in fields))])
        else:
            lists.append([dict(p) for p in part])
    out = []
    for combo in itertools.product(*lists):
        point: dict[str, Any] = {}
        for p in combo:
            dup = set(point) & set(p)
            if dup:
                raise SweepError(f"product: field {sorted(dup)[0]!r} appears in more than one "
                                 "part")
            point.update(p)
        out.append(point)
    return out


def zipped(fields: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Points whose fields move together: zipped({"optimizer.b1": [0.9, 0.95],
    "optimizer.b2": [0.95, 0.99]}) -> two points. All lists must have the same length."""
    lengths = {f: len(v) for f, v in fields.items()}
    if len(set(lengths.values())) > 1:
        raise SweepError(f"zipped: lists of different lengths {lengths}")
    names = list(fields)
    return [dict(zip(names, values, strict=True))
            for values in zip(*(fields[f] for f in names), strict=True)]


def sweep(config: str, points: Sequence[Mapping[str, Any]] | None = None, *,
          overrides: Mapping[str, Any] | None = None, seeds: Sequence[int] | None = None,
          group_by: Sequence[str] | None = None, tune: Sequence[str] | None = None,
          metric: str | None = None, goal: str | None = None,
          heatmaps: Sequence[Sequence[str]] | None = None,
          name: str | None = None,
          target: Mapping[str, float] | None = None) -> ml_collections.ConfigDict:
    """What `get_sweep()` returns.

    Args:
      config: the base training config: a file (relative paths are looked up from the working
        directory, then from the sweep file's folder and its parents) or the name of a config
        shipped in optaxlab/configs/ (e.g. "lm_tiny").
      points: list of {field: value} dicts (see `product`, `zipped`); default: one point.
      overrides: {field: value} applied to every point (fields as on the trainer's command line).
      seeds: run every point once per seed (sets `seed`).
      group_by: fields whose values define the groups a report compares (default: the swept
        fields with text or bool values, e.g. optimizer.name).
      tune: the fields tuned within a group (default: the other swept fields but seed and
        those with one value in every point).
      metric: the results.csv column that ranks points (default final_eval_loss, or
        final_train_loss when no point evaluates: eval_every=0); goal: 'min' or 'max'
        (default: 'max' for accuracies, else 'min').
      heatmaps: pairs of tuned fields to plot as heatmaps (default: every pair of tuned
        fields other than the learning rate with at least 2 values each).
      name: a title for reports (default: the sweep file's name).
      target: {key: value} with one metrics.jsonl key (loss, eval_loss, eval_perplexity or
        eval_accuracy), e.g. {"eval_loss": 4.0}: each point records the step, tokens and seconds
        at which it first reached the value (at most it; at least it for an accuracy), and the
        summary ranks the groups by it.
    """
    return ml_collections.ConfigDict(dict(
        config=config, points=[dict(p) for p in (points if points is not None else [{}])],
        overrides=dict(overrides or {}), seeds=None if seeds is None else list(seeds),
        group_by=None if group_by is None else list(group_by),
        tune=None if tune is None else list(tune), metric=metric, goal=goal,
        heatmaps=None if heatmaps is None else [list(h) for h in heatmaps], name=name,
        target=None if target is None else dict(target),
    ), allow_dotted_keys=True)


# ---------------------------------------------------------------------------------------------
# The resolved sweep.


@dataclasses.dataclass(frozen=True)
class Point:
    """One training run of a sweep."""

    index: int
    name: str  # also its folder under DIR/points/
    group: str  # e.g. "optimizer=adam" ("all" when nothing groups the points)
    values: dict[str, Any]  # every swept field -> this point's (resolved) value
    overrides: dict[str, Any]  # field -> value given to the trainer (sweep overrides + point)
    args: tuple[str, ...]  # trainer arguments after --config/--workdir
    steps: int  # config.steps of the point
    seed: int  # config.seed of the point (swept or not)
    # the optimizer block the point runs with (name, schedule and every hparam, resolved)
    hparams: dict[str, Any] = dataclasses.field(default_factory=dict)

    def workdir(self, sweep_dir: Path) -> Path:
        return Path(sweep_dir) / POINTS_DIR / self.name

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["args"] = list(self.args)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Point:
        d = dict(d)
        d["args"] = tuple(d["args"])
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclasses.dataclass
class Plan:
    """A resolved sweep: what sweep.json holds."""

    name: str
    sweep_file: str | None
    config: str  # absolute path of the base config file
    overrides: dict[str, Any]
    fields: list[str]  # swept fields, in order (seed last)
    group_by: list[str]
    tune: list[str]
    metric: str
    goal: str
    heatmaps: list[list[str]]
    points: list[Point]
    # hparams whose value differs from the base config's same-named value (nothing silent)
    notes: list[str] = dataclasses.field(default_factory=list)
    target: dict[str, float] | None = None  # {metrics.jsonl key: value} (time to target)
    # {point name: its full config} as `resolve` built them (not in sweep.json: `check_points`
    # validates these instead of building each point again; a plan read from disk has none)
    configs: dict[str, ml_collections.ConfigDict] = dataclasses.field(
        default_factory=dict, repr=False, compare=False)

    def short(self, field: str) -> str:
        return short_names(self.fields).get(field, field)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(dataclasses.replace(self, configs={}))
        del d["configs"]
        d["points"] = [p.to_json() for p in self.points]
        d["short_names"] = short_names(self.fields)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Plan:
        kw = {f.name: d[f.name] for f in dataclasses.fields(cls)
              if f.name not in ("points", "configs") and f.name in d}
        return cls(points=[Point.from_json(p) for p in d["points"]], **kw)

    def trainer_command(self, point: Point, sweep_dir: Path, python: str | None = None
                        ) -> list[str]:
        """The exact `python -m optaxlab.train` command of a point."""
        return [python or sys.executable, "-m", "optaxlab.train", "--config", self.config,
                "--workdir", str(point.workdir(Path(sweep_dir).absolute())), *point.args]


def short_names(fields: Sequence[str]) -> dict[str, str]:
    """field -> short name (lr, optimizer, b2, ...); the full name where short ones collide."""
    short = {f: SHORT_NAMES.get(f, f.rsplit(".", 1)[-1]) for f in fields}
    counts: dict[str, int] = {}
    for s in short.values():
        counts[s] = counts.get(s, 0) + 1
    return {f: (s if counts[s] == 1 else f) for f, s in short.items()}


def format_value(value: Any) -> str:
    """A value as it appears in point names: 3 significant digits when that is exact."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        short = f"{value:.3g}"
        return short if float(short) == value else repr(value)
    if isinstance(value, (list, tuple)):
        return "x".join(format_value(v) for v in value)
    if isinstance(value, str) and ":" in value and os.sep in value:  # /abs/my_opt.py:factory
        where, _, attr = value.rpartition(":")
        return f"{os.path.basename(where)}:{attr}"
    return str(value)


def _safe(text: str) -> str:
    """A folder-name-safe version of a name component (no /, no leading dot, no spaces)."""
    out = "".join(c if c.isalnum() or c in "-_.+=" else "_" for c in text)
    return out.lstrip(".") or "_"


def point_name(values: Mapping[str, Any], short: Mapping[str, str]) -> str:
    """`optimizer=adam,lr=0.001,seed=0`: the point's own swept values in sweep order."""
    if not values:
        return "base"
    name = ",".join(f"{_safe(short.get(f, f))}={_safe(format_value(v))}"
                    for f, v in values.items())
    if len(name) > MAX_NAME:
        digest = hashlib.sha1(json.dumps(values, sort_keys=True, default=repr).encode())
        name = f"{name[:MAX_NAME - 9]}-{digest.hexdigest()[:8]}"
    return name


def command_value(value: Any) -> str:
    """A value as the trainer's `--config.FIELD=VALUE` flag parses it (ml_collections flags)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return repr(tuple(value))
    if value is None:
        return "None"
    return str(value)


# ---------------------------------------------------------------------------------------------
# Loading and resolving.


def _load_python(path: Path, function: str, module_name: str):
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SweepError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SweepError:
        raise
    except Exception as e:  # noqa: BLE001 - any error in the user's file, on one line
        raise SweepError(f"{path}: {_one_line(e)}") from e
    if not hasattr(module, function):
        raise SweepError(f"{path}: has no {function}() function")
    return getattr(module, function)


def _one_line(e: BaseException) -> str:
    """An exception as one line: type, message, and where in a user file it happened."""
    where = ""
    if isinstance(e, SyntaxError) and e.filename:
        where = f" (line {e.lineno})"
    else:
        tb = e.__traceback__
        while tb is not None:
            if not tb.tb_frame.f_code.co_filename.startswith(str(Path(__file__).parent)):
                where = f" (in {Path(tb.tb_frame.f_code.co_filename).name}, line {tb.tb_lineno})"
            tb = tb.tb_next
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}{where}"


def load_sweep_file(path: str | Path) -> dict[str, Any]:
    """get_sweep() of a sweep file, as a plain dict (a ConfigDict from `sweep()` or a dict)."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {str(path)!r} not found")
    get_sweep = _load_python(path, "get_sweep", "optaxlab_sweep_file")
    try:
        spec = get_sweep()
    except SweepError as e:
        raise SweepError(f"{path}: {e}") from e
    except Exception as e:  # noqa: BLE001 - any error in the user's file, on one line
        raise SweepError(f"{path}: get_sweep() failed: {_one_line(e)}") from e
    if isinstance(spec, ml_collections.ConfigDict):
        spec = spec.to_dict()
    if not isinstance(spec, Mapping):
        raise SweepError(f"{path}: get_sweep() returned {type(spec).__name__}; expected what "
                         "optaxlab.sweep.sweep(...) returns (or a dict with the same keys)")
    valid = set(sweep.__code__.co_varnames[:sweep.__code__.co_argcount
                                           + sweep.__code__.co_kwonlyargcount])
    for key in spec:
        if key not in valid:
            raise SweepError(f"{path}: get_sweep() key {key!r} is unknown; valid: "
                             f"{', '.join(sorted(valid))}")
    if "config" not in spec:
        raise SweepError(f"{path}: get_sweep() must name the base config, e.g. "
                         "config='lm_tiny' or config='my_config.py'")
    return dict(spec)


def find_config(config: str, sweep_file: Path | None) -> Path:
    """The base config file: relative to the working directory, else to the sweep file's folder
    or one of its parents."""
    file, _, _ = str(config).partition(":")
    candidates = [Path(file)]
    if sweep_file is not None and not Path(file).is_absolute():
        folder = Path(sweep_file).absolute().parent
        candidates += [p / file for p in (folder, *folder.parents)]
    for c in candidates:
        if c.is_file():
            return c.absolute()
    from optaxlab.train.config import config_file  # a shipped config by name: 'lm_tiny'

    shipped = Path(config_file(file))
    if shipped.is_file():
        return shipped
    raise SweepError(f"config={config!r}: file not found (looked in the working directory and "
                     "next to the sweep file and its parent folders)")


def load_config_file(path: Path, arg: str | None = None) -> ml_collections.ConfigDict:
    get_config = _load_python(Path(path), "get_config", "optaxlab_sweep_base_config")
    return get_config(*([arg] if arg else []))


def _fail_field(path: str, node: ml_collections.ConfigDict, bad: str, where: str, point: str):
    valid = ", ".join(sorted(node.keys()))
    at = f" (point {point})" if point else ""
    raise SweepError(f"sweep field {path!r}{at}: {bad!r} is not a field of {where}; valid: "
                     f"{valid}")


def _set_field(cfg: ml_collections.ConfigDict, path: str, value: Any, point: str) -> None:
    """cfg[path] = value with the config's own type checks; a one-line SweepError otherwise."""
    node = cfg
    parts = path.split(".")
    for depth, part in enumerate(parts):
        where = "config" + "".join(f".{p}" for p in parts[:depth])
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            if not isinstance(node, ml_collections.ConfigDict):
                raise SweepError(f"sweep field {path!r}: {where} is a value, not a block")
            _fail_field(path, node, part, where, point)
        if depth < len(parts) - 1:
            node = node[part]
    leaf = parts[-1]
    if isinstance(node[leaf], ml_collections.ConfigDict):
        raise SweepError(f"sweep field {path!r}: is a block; sweep its fields instead (valid: "
                         f"{', '.join(sorted(node[leaf].keys()))})")
    try:
        node[leaf] = value
    except (TypeError, ValueError) as e:
        raise SweepError(f"sweep field {path}={value!r}"
                         f"{f' (point {point})' if point else ''}: {str(e).splitlines()[0]}"
                         ) from e


def point_config(base: ml_collections.ConfigDict, file_optimizer: ml_collections.ConfigDict,
                 overrides: Mapping[str, Any], point: str = "") -> ml_collections.ConfigDict:
    """The training config the trainer builds from the base config file and `overrides`
    (an `optimizer.name` override switches the optimizer block as `python -m optaxlab.train`
    does); raises a one-line SweepError for an unknown field or a value of the wrong type."""
    from optaxlab import optimizers
    from optaxlab.train import config as config_lib  # the trainer's own switching rules
    from optaxlab.train import optim

    cfg = copy.deepcopy(base)
    cfg.unlock()
    opt = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("optimizer.")}
    for path, value in overrides.items():
        if not path.startswith("optimizer."):
            _set_field(cfg, path, value, point)
    if "name" in opt:
        explicit = {k: v for k, v in opt.items() if k != "name"}
        try:
            cfg.optimizer = config_lib.switch_optimizer(file_optimizer, opt["name"], explicit)
        except ValueError as e:
            msg = str(e).splitlines()[0].removeprefix("config.")
            raise SweepError(f"sweep field {msg}{f' (point {point})' if point else ''}") from e
    else:
        for key, value in opt.items():
            _set_field(cfg, f"optimizer.{key}", value, point)
    name = cfg.optimizer.get("name")
    if opt and name in optimizers.names():  # field names now; values per point (invalid)
        valid = [*optimizers.hparams(name), *optim.RESERVED]
        unknown = [k for k in opt if k not in valid]
        if unknown:
            raise SweepError(
                f"sweep field optimizer.{unknown[0]}{f' (point {point})' if point else ''}: "
                f"optimizer {name!r} has no hparam {unknown[0]!r}; valid keywords: "
                f"{', '.join(k for k in valid if k != 'name')}")
    return cfg


def _get(cfg: ml_collections.ConfigDict, path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        node = node[part] if isinstance(node, ml_collections.ConfigDict) and part in node else None
    return node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def resolve(spec: Mapping[str, Any], sweep_file: str | Path | None = None) -> Plan:
    """Check a sweep (what get_sweep() returned) against its base config and expand it."""
    sweep_file = Path(sweep_file).absolute() if sweep_file else None
    config_arg = str(spec["config"])
    config_path = find_config(config_arg, sweep_file)
    _, _, config_extra = config_arg.partition(":")
    try:
        base = load_config_file(config_path, config_extra or None)
        file_optimizer = copy.deepcopy(base.optimizer)
    except SweepError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the user's config file
        raise SweepError(f"config={config_arg!r}: get_config() failed: {_one_line(e)}") from e

    from optaxlab import optimizers

    overrides = dict(spec.get("overrides") or {})
    if "optimizer.name" in overrides:
        overrides["optimizer.name"] = optimizers.canonical(overrides["optimizer.name"])
    if "progress_bar" not in overrides:
        overrides["progress_bar"] = False  # the log of a point is a file: no tqdm bar in it
    if "health.policy" not in overrides and not any(
            "health.policy" in p for p in spec.get("points") or []):
        # A blown-up or dead run is a result (diverged / stalled), not a number to rank.
        overrides["health.policy"] = "halt"
    raw_points = [dict(p) for p in (spec.get("points") or [{}])]
    for p in raw_points:  # file references made absolute: every process imports the same file
        if "optimizer.name" in p:
            p["optimizer.name"] = optimizers.canonical(p["optimizer.name"])
    seeds = spec.get("seeds")
    if seeds is not None:
        if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                for s in seeds):
            raise SweepError(f"seeds={seeds!r} must be a non-empty list of ints >= 0")
        if len(set(seeds)) != len(seeds):
            raise SweepError(f"seeds={seeds!r} has repeated values")
        if any("seed" in p for p in raw_points):
            raise SweepError("seeds= is given and some points also set 'seed'; use one of them")
        raw_points = [{**p, "seed": s} for p in raw_points for s in seeds]

    fields: list[str] = []
    for p in raw_points:
        for f in p:
            if f not in fields:
                fields.append(f)
    if "seed" in fields:  # seed last: names read optimizer=adam,lr=0.001,seed=0
        fields.remove("seed")
        fields.append("seed")
    for f in fields:
        if f in overrides:
            raise SweepError(f"field {f!r} is both swept (in points) and fixed (in overrides); "
                             "keep one")
    short = short_names(fields)

    # Check every field once against the base config (fast, clear errors), then each point.
    point_cfgs = []
    for p in raw_points:
        ordered = {f: p[f] for f in fields if f in p}
        name = point_name(ordered, short)
        cfg = point_config(base, file_optimizer, {**overrides, **ordered}, point=name)
        point_cfgs.append((ordered, name, cfg))

    values_by_field = {f: [_get(cfg, f) for _, _, cfg in point_cfgs] for f in fields}
    group_by = spec.get("group_by")
    if group_by is None:
        # A field only some points have (an optimizer's own hparam: b1 for adam, beta for
        # signum) is tuned, not grouped by: its missing values read None.
        group_by = [f for f in fields if f != "seed"
                    and not all(_is_number(v) for v in values_by_field[f] if v is not None)]
    tune = spec.get("tune")
    if tune is None:  # (a field with one value in every point is not tuned: it is fixed)
        tune = [f for f in fields if f not in group_by and f != "seed"
                and len({repr(v) for v in values_by_field[f]}) > 1]
    for label, chosen in (("group_by", group_by), ("tune", tune)):
        for f in chosen:
            if f not in fields:
                raise SweepError(f"{label}: {f!r} is not a swept field; swept: "
                                 f"{', '.join(fields) or '(none)'}")
    overlap = set(group_by) & set(tune)
    if overlap:
        raise SweepError(f"field {sorted(overlap)[0]!r} is in both group_by and tune")

    evaluates = any(cfg.get("eval_every") for _, _, cfg in point_cfgs)  # overrides count
    metric = spec.get("metric") or ("final_eval_loss" if evaluates else "final_train_loss")
    if metric not in METRIC_COLUMNS:
        raise SweepError(f"metric={metric!r}; valid: {', '.join(METRIC_COLUMNS)}")
    goal = spec.get("goal") or ("max" if "accuracy" in metric else "min")
    if goal not in GOALS:
        raise SweepError(f"goal={goal!r}; valid: {', '.join(GOALS)}")
    target = check_target(spec.get("target"))
    heatmaps = spec.get("heatmaps")
    if heatmaps is None:
        pairs = [f for f in tune if f != LR_FIELD and len(set(map(repr, values_by_field[f]))) > 1]
        heatmaps = [list(h) for h in itertools.combinations(pairs, 2)]
    for h in heatmaps:
        if len(h) != 2 or any(f not in tune for f in h):
            raise SweepError(f"heatmaps: {h!r} must be a pair of tuned fields; tuned: "
                             f"{', '.join(tune) or '(none)'}")

    points = []
    seen: dict[str, int] = {}
    for index, (ordered, name, cfg) in enumerate(point_cfgs):
        if name in seen:
            raise SweepError(f"points {seen[name]} and {index} have the same name {name!r} "
                             "(the same values); remove the duplicate")
        seen[name] = index
        given = {**overrides, **ordered}
        group = ",".join(f"{short[f]}={format_value(_get(cfg, f))}" for f in group_by) or "all"
        args = tuple(f"--config.{f}={command_value(v)}" for f, v in given.items())
        points.append(Point(index=index, name=name, group=group,
                            values={f: _get(cfg, f) for f in fields}, overrides=given,
                            args=args, steps=int(cfg.steps), seed=int(cfg.seed),
                            hparams=resolved_hparams(cfg)))
    notes = hparam_notes(file_optimizer, [cfg for _, _, cfg in point_cfgs])

    title = spec.get("name") or (sweep_file.stem if sweep_file else Path(config_path).stem)
    return Plan(name=str(title), sweep_file=str(sweep_file) if sweep_file else None,
                config=str(config_path) + (f":{config_extra}" if config_extra else ""),
                overrides=overrides, fields=fields, group_by=list(group_by), tune=list(tune),
                metric=metric, goal=goal, heatmaps=[list(h) for h in heatmaps], points=points,
                notes=notes, target=target,
                configs={name: cfg for _, name, cfg in point_cfgs})


def check_points(plan: Plan, points: Sequence[Point] | None = None,
                 num_devices: int | None = None) -> dict[str, ml_collections.ConfigDict]:
    """Build and validate every point's full training config as its trainer will (names and
    values: the optimizer's hparams, the schedule, data fields, the mesh) before anything runs.

    `num_devices`: the devices a point's trainer will see (the mesh is checked against it);
    None checks each mesh only for itself (a command printed to run elsewhere). Returns
    {point name: its validated config} (the runner reuses them: built and checked once); raises
    one SweepError listing every bad point, one line each.
    """
    from optaxlab.train import config as config_lib
    from optaxlab.train import errors

    chosen = plan.points if points is None else points
    base = file_optimizer = None
    if any(p.name not in plan.configs for p in chosen):  # a plan read from disk: build them
        file, _, arg = plan.config.partition(":")
        try:
            base = load_config_file(Path(file), arg or None)
        except Exception as e:  # noqa: BLE001 - any failure of the user's config file
            raise SweepError(f"config={plan.config!r}: get_config() failed: {_one_line(e)}"
                             ) from e
        file_optimizer = copy.deepcopy(base.optimizer)
    bad, configs = [], {}
    for p in chosen:
        try:
            cfg = plan.configs.get(p.name) or point_config(base, file_optimizer, p.overrides,
                                                           p.name)
            sizes = [s for s in (cfg.mesh.get(a) for a in config_lib.AXES)
                     if isinstance(s, int) and s > 0]
            config_lib.validate(cfg, num_devices=num_devices or math.prod(sizes))
            configs[p.name] = cfg
        except SweepError as e:
            bad.append(f"  {p.name}: {str(e).replace(f' (point {p.name})', '')}")
        except ValueError as e:  # the trainer's ConfigError: one line naming the field
            bad.append(f"  {p.name}: {errors.one_line(e)}")
    if bad:
        where = f" on {num_devices} device(s)" if num_devices else ""
        raise SweepError(f"{len(bad)} of {len(chosen)} point(s) have an invalid config{where}; "
                         "nothing ran:\n" + "\n".join(bad))
    return configs


TARGET_KEYS = ("loss", "eval_loss", "eval_perplexity", "eval_accuracy")


def check_target(target: Any) -> dict[str, float] | None:
    """A sweep's `target`: None, or {one of TARGET_KEYS: a finite number}."""
    if target is None:
        return None
    if isinstance(target, ml_collections.ConfigDict):
        target = target.to_dict()
    if not isinstance(target, Mapping) or len(target) != 1:
        raise SweepError(f"target={target!r} must be one {{key: value}}, e.g. "
                         f"{{'eval_loss': 4.0}}; keys: {', '.join(TARGET_KEYS)}")
    (key, value), = target.items()
    if key not in TARGET_KEYS:
        raise SweepError(f"target key {key!r}; valid: {', '.join(TARGET_KEYS)}")
    if not _is_number(value) or not math.isfinite(value):
        raise SweepError(f"target {key}={value!r} must be a finite number")
    return {key: float(value)}


def resolved_hparams(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """The optimizer block a point runs with, JSON-safe (tuples as lists)."""
    return json.loads(json.dumps(cfg.optimizer.to_dict(), default=str))


def hparam_notes(file_optimizer: ml_collections.ConfigDict,
                 cfgs: Sequence[ml_collections.ConfigDict]) -> list[str]:
    """One line per (optimizer, hparam, value) that differs from the base config file's
    same-named value, e.g. "adam points run b2 = 0.999; the base config has 0.95"."""
    from optaxlab.train import optim

    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for cfg in cfgs:
        opt = cfg.optimizer
        for key, value in opt.items():
            if key in optim.RESERVED or key not in file_optimizer:
                continue
            if file_optimizer[key] != value:
                seen.setdefault((str(opt.name), key), {})[repr(value)] = value
    out = []
    for (name, key), values in seen.items():
        if len(values) == 1:
            what = f"{key} = {next(iter(values))}"
        else:  # a swept hparam: its range, not one line per value
            vals = list(values.values())
            try:
                vals = sorted(vals)
            except TypeError:
                pass
            what = (f"{key} in {{{', '.join(format_value(v) for v in vals)}}}" if len(vals) <= 4
                    else f"{key} in {len(vals)} values from {format_value(vals[0])} to "
                    f"{format_value(vals[-1])}")
        out.append(f"{format_value(name)} points run {what}; the base config has "
                   f"{file_optimizer[key]!r}")
    return out


# ---------------------------------------------------------------------------------------------
# sweep.json and point.json.


def read_plan(sweep_dir: str | Path) -> Plan:
    path = Path(sweep_dir) / SWEEP_JSON
    if not path.is_file():
        raise SweepError(f"{path} not found: not a sweep folder (run python -m optaxlab.sweep "
                         "SWEEP.py --workdir DIR first)")
    try:
        return Plan.from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SweepError(f"{path}: unreadable ({type(e).__name__}: {e})") from e


def check_against_disk(plan: Plan, sweep_dir: Path) -> list[str]:
    """SweepError if a point folder holds a point made with different settings (its results
    would be silently mixed or overwritten); returns the names of point folders on disk that
    the plan no longer has (left untouched)."""
    names = {p.name for p in plan.points}
    for p in plan.points:
        path = p.workdir(sweep_dir) / POINT_JSON
        if not path.is_file():
            continue
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if list(old.get("args", [])) != list(p.args) or old.get("config") != plan.config:
            before = set(old.get("args", [])) - set(p.args)
            after = set(p.args) - set(old.get("args", []))
            what = (f"config {old.get('config')} -> {plan.config}" if old.get("config")
                    != plan.config else f"{' '.join(sorted(before)) or '-'} -> "
                    f"{' '.join(sorted(after)) or '-'}")
            raise SweepError(f"point {p.name} in {sweep_dir} was made with different settings "
                             f"({what}); restore the sweep file or use a new --workdir")
    root = Path(sweep_dir) / POINTS_DIR
    return sorted(d.name for d in root.iterdir() if d.is_dir() and d.name not in names) \
        if root.is_dir() else []


def write_plan(plan: Plan, sweep_dir: Path, env: Mapping[str, str] | None = None) -> None:
    """sweep.json and every point's point.json (the point's settings and exact command)."""
    sweep_dir = Path(sweep_dir)
    (sweep_dir / POINTS_DIR).mkdir(parents=True, exist_ok=True)
    data = plan.to_json()
    data["env"] = dict(env or {})
    if outcome.read_json(sweep_dir / SWEEP_JSON) != json.loads(json.dumps(data, default=repr)):
        outcome.write_json(sweep_dir / SWEEP_JSON, data)  # only when the sweep changed
    for p in plan.points:
        wd = p.workdir(sweep_dir)
        wd.mkdir(parents=True, exist_ok=True)
        outcome.write_json(wd / POINT_JSON, {**p.to_json(), "config": plan.config,
                                      "command": plan.trainer_command(p, sweep_dir)})
