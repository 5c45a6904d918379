"""CLI: python -m optaxlab.train --config lm_tiny --workdir runs/x [--config.F=V ...]

Any config field can be overridden, e.g. --config.steps=200 --config.optimizer.name=signum
--config.optimizer.learning_rate=3e-4 --config.seed=1 --config.checkpoint_every=50.
Switching --config.optimizer.name starts from that optimizer's registry defaults (the config
file's hparam values apply only when its optimizer is the same one; nothing carries over between
optimizers, and every hparam that differs from the file's same-named value is logged);
--config.optimizer.<hparam>=V then sets any of its hparams. The name may be a reference to an
optimizer of one's own: --config.optimizer.name=path/to/file.py:factory or package.module:factory
(docs/own_optimizer.md). --config lm_tiny names a shipped config (optaxlab/configs/lm_tiny.py).
A workdir that already holds a checkpoint is resumed; --restart moves an old run aside instead.

Exit codes (optaxlab.train.errors): 0 finished or preempted (SIGTERM; checkpoint saved),
1 internal error (a bug; traceback), 2 bad config / bad data / checkpoint incompatible with the
config (one line, workdir untouched), 3 non-finite halt, 4 I/O failure (disk full, permission,
vanished mount), 5 workdir locked by another process, 130 interrupted (SIGINT; checkpoint
saved). --verbose (or OPTAXLAB_VERBOSE=1) also prints tracebacks.

Multi-host (TPU pod, multi-node GPU, or local CPU processes): --multihost calls
jax.distributed.initialize (coordinator / process count / id from the flags below, else from
OPTAXLAB_COORDINATOR / OPTAXLAB_NUM_PROCESSES / OPTAXLAB_PROCESS_ID, else auto-detected).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from optaxlab.train import errors

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (optaxlab/configs/*.py).",
                                lock_config=False, accept_new_attributes=True)
flags.DEFINE_string("workdir", None, "Output folder (local or gs://...): checkpoints/, "
                    "tensorboard/, metrics.jsonl, status.json.")
flags.DEFINE_integer("stop_after", None, "Stop (and checkpoint) at this step; the schedule still "
                     "spans config.steps. Resume later by running the same command without it.")
flags.DEFINE_bool("restart", False, "Move an existing run in --workdir aside (to "
                  "WORKDIR/previous_runs/<time>/; nothing is deleted) and start from step 0.")
flags.DEFINE_bool("verbose", False, "Print tracebacks with errors (also OPTAXLAB_VERBOSE=1).")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (with --multihost).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --multihost).")
flags.DEFINE_integer("process_id", None, "This process's index (with --multihost).")

_LOCKED_KEY = re.compile(r'Key "([^"]+)" does not exist and cannot be added')


def _verbose(argv=None) -> bool:
    if os.environ.get("OPTAXLAB_VERBOSE", "") not in ("", "0"):
        return True
    if argv is not None:
        return "--verbose" in argv
    return bool(FLAGS["verbose"].value) if "verbose" in FLAGS else False


def _exit(msg: str, code: int, exc: BaseException | None = None, verbose: bool | None = None):
    if exc is not None and (code == errors.BUG or (_verbose() if verbose is None else verbose)):
        traceback.print_exception(exc)
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


class _NotFromOrbax(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return f"{os.sep}orbax{os.sep}" not in record.pathname


class _NoUnretrievedFutures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "exception was never retrieved" not in record.getMessage()


def _quiet_library_noise() -> None:
    """Without --verbose: hide Orbax's own error logs (a failed background save logs the same
    traceback once per thread), asyncio's 'Future exception was never retrieved' reports of
    its other failed writes (logged when the process ends, e.g. on a full disk) and the 'Event
    loop is closed' tracebacks its failed futures leave; the run ends with our one-line error
    naming the cause either way."""
    logging.getLogger("absl").addFilter(_NotFromOrbax())
    logging.getLogger("asyncio").addFilter(_NoUnretrievedFutures())
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, RuntimeError) and \
                "Event loop is closed" in str(unraisable.exc_value):
            return
        previous(unraisable)

    sys.unraisablehook = hook


def _load_config_file(path: str):
    """get_config() of a config file (`path` or `path:arg`), as the config flag loads it."""
    import importlib.util

    file, *arg = path.split(":", 1)
    spec = importlib.util.spec_from_file_location("optaxlab_config_file", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*arg)


def _unknown_field(argv: list[str], key: str) -> str | None:
    """The one-line message for `--config.<path>=...` naming a field a locked block lacks."""
    from optaxlab.train import config as config_lib

    paths = [a.split("=", 1)[0][len("--config."):] for a in argv if a.startswith("--config.")]
    path = next((p for p in paths if p.split(".")[-1] == key), None)
    file = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if file is None and "--config" in argv[:-1]:
        file = argv[argv.index("--config") + 1]
    if path is None or file is None:
        return None
    try:
        return config_lib.unknown_field_message(_load_config_file(file), path)
    except Exception:  # noqa: BLE001 - fall back to ml_collections' own message
        return None


# `--config.FIELD=None` (e.g. optimizer.max_norm=None: no clipping): ml_collections parses a
# float field's value with float(), so these are taken out of argv and applied after loading.
_NONE_OVERRIDES: list[str] = []


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with every error as one line and exit code 2."""
    _NONE_OVERRIDES[:] = [a[len("--config."):-len("=None")] for a in argv
                          if a.startswith("--config.") and a.endswith("=None")]
    argv = [a for a in argv if not (a.startswith("--config.") and a.endswith("=None"))]
    from optaxlab.train.config import config_args

    argv = config_args(argv)  # --config lm_tiny: the shipped config of that name
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _exit(f"{errors.one_line(e)} (python -m optaxlab.train --helpfull lists the flags)",
              errors.BAD_INPUT, e, _verbose(argv))
    except (KeyError, AttributeError) as e:  # a locked config block refused a new key
        m = _LOCKED_KEY.search(str(e))
        msg = _unknown_field(argv, m.group(1)) if m else None
        _exit(msg or errors.one_line(e).strip("'\""), errors.BAD_INPUT, e, _verbose(argv))
    except Exception as e:  # noqa: BLE001 - a config override that cannot be applied
        _exit(f"bad flags: {errors.one_line(e)}", errors.BAD_INPUT, e, _verbose(argv))
    return []  # unreachable


def _config():
    """FLAGS.config, loading errors (missing file, exception in get_config) as exit 2."""
    try:
        config = FLAGS.config
        if config is not None:
            _ = config.is_locked  # a config that failed to load raises on first use
        return config
    except Exception as e:  # noqa: BLE001
        text = str(e)
        tried = re.search(r"\[Errno \d+\] ([^\n]+)", text)
        why = tried.group(1) if tried else errors.one_line(e)
        _exit(f"--config {config_flags.get_config_filename(FLAGS['config'])}: cannot load it "
              f"({why})", errors.BAD_INPUT, e)


def main(argv):
    if len(argv) > 1:
        _exit(f"unexpected arguments {argv[1:]}; overrides look like --config.steps=100",
              errors.BAD_INPUT)
    if FLAGS["config"].value is None and not FLAGS["config"].present:
        _exit("--config is required, e.g. --config lm_tiny", errors.BAD_INPUT)
    if FLAGS.workdir is None:
        _exit("--workdir is required, e.g. --workdir runs/lm_tiny", errors.BAD_INPUT)
    config = _config()
    if config is None:
        _exit("--config is required, e.g. --config lm_tiny", errors.BAD_INPUT)
    if FLAGS.multihost:
        from optaxlab.train import mesh

        mesh.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id)
    if not FLAGS["verbosity"].present:  # quiet Orbax/JAX INFO lines; ours stay at INFO
        absl_logging.set_verbosity(absl_logging.WARNING)
    if not _verbose():
        _quiet_library_noise()
    logging.getLogger("optaxlab.train").setLevel(logging.INFO)

    from optaxlab.train import config as config_lib
    from optaxlab.train.loop import train

    overrides = config_flags.get_override_values(FLAGS["config"])
    for path in _NONE_OVERRIDES:
        *parents, leaf = path.split(".")
        node = config
        for part in parents:
            node = node.get(part) if hasattr(node, "get") else None
        if node is None or not hasattr(node, "keys") or (
                leaf not in node and not (path.startswith("optimizer.")
                                          and "optimizer.name" in overrides)):
            msg = config_lib.unknown_field_message(config, path)
            _exit(msg or f"--config.{path}=None: no such field", errors.BAD_INPUT)
        if leaf in node:
            node[leaf] = None
        overrides[path] = None
    try:
        if "optimizer.name" in overrides:
            explicit = {k.split(".", 1)[1]: v for k, v in overrides.items()
                        if k.startswith("optimizer.") and k != "optimizer.name"}
            file_cfg = _load_config_file(config_flags.get_config_filename(FLAGS["config"]))
            config.optimizer = config_lib.switch_optimizer(file_cfg.optimizer,
                                                           config.optimizer.name, explicit)
        result = train(config, FLAGS.workdir, stop_after=FLAGS.stop_after,
                       restart=FLAGS.restart)
    except KeyboardInterrupt as e:
        _exit(f"interrupted: {errors.one_line(e)}", errors.INTERRUPTED, e)
    except Exception as e:  # noqa: BLE001 - every outcome has its exit code
        code = errors.exit_code(e)
        if code == errors.IO_FAILURE:
            _exit(f"I/O failure: {errors.io_failure(e)} (nothing was moved or deleted; fix it, "
                  "then rerun the same command to resume)", code, e)
        if code == errors.BUG:
            _exit(f"internal error (a bug; the traceback is above): {errors.one_line(e)}",
                  code, e)
        _exit(errors.one_line(e), code, e)
    print(result.message, file=sys.stderr, flush=True)
    sys.exit(errors.INTERRUPTED if result.status == "interrupted" else errors.FINISHED)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
