"""CLI: python -m optaxlab.train --config configs/lm_tiny.py --workdir runs/x [--config.F=V ...]

Any config field can be overridden, e.g. --config.steps=200 --config.optimizer.name=signum
--config.optimizer.learning_rate=3e-4 --config.seed=1 --config.checkpoint_every=50.
Switching --config.optimizer.name starts from that optimizer's registry defaults (hparams the
config file set away from its own optimizer's defaults carry over when the new one has them);
--config.optimizer.<hparam>=V then sets any of its hparams. A workdir that already holds a
checkpoint is resumed. Bad configs exit with status 2 and a one-line error saying what is valid.

Multi-host (TPU pod, multi-node GPU, or local CPU processes): --multihost calls
jax.distributed.initialize (coordinator / process count / id from the flags below, else from
OPTAXLAB_COORDINATOR / OPTAXLAB_NUM_PROCESSES / OPTAXLAB_PROCESS_ID, else auto-detected).
"""

from __future__ import annotations

import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (configs/*.py).",
                                lock_config=False, accept_new_attributes=True)
flags.DEFINE_string("workdir", None, "Output folder: checkpoints/, tensorboard/, metrics.jsonl.")
flags.DEFINE_integer("stop_after", None, "Stop (and checkpoint) at this step; the schedule still "
                     "spans config.steps. Resume later by running the same command without it.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (with --multihost).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --multihost).")
flags.DEFINE_integer("process_id", None, "This process's index (with --multihost).")


def _error(msg: str, code: int = 2):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def _load_config_file(path: str):
    """get_config() of a config file (`path` or `path:arg`), as the config flag loads it."""
    import importlib.util

    file, *arg = path.split(":", 1)
    spec = importlib.util.spec_from_file_location("optaxlab_config_file", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*arg)


def main(argv):
    if len(argv) > 1:
        _error(f"unexpected arguments {argv[1:]}; overrides look like --config.steps=100")
    if FLAGS.config is None:
        _error("--config is required, e.g. --config configs/lm_tiny.py")
    if FLAGS.workdir is None:
        _error("--workdir is required, e.g. --workdir runs/lm_tiny")
    if FLAGS.multihost:
        from optaxlab.train import mesh

        mesh.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                    FLAGS.process_id)
    if not FLAGS["verbosity"].present:  # quiet Orbax/JAX INFO lines; ours stay at INFO
        absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("optaxlab.train").setLevel(logging.INFO)

    from optaxlab.train import config as config_lib
    from optaxlab.train.loop import NonFiniteError, train

    config = FLAGS.config
    overrides = config_flags.get_override_values(FLAGS["config"])
    try:
        if "optimizer.name" in overrides:
            explicit = {k.split(".", 1)[1]: v for k, v in overrides.items()
                        if k.startswith("optimizer.") and k != "optimizer.name"}
            file_cfg = _load_config_file(config_flags.get_config_filename(FLAGS["config"]))
            config.optimizer = config_lib.switch_optimizer(file_cfg.optimizer,
                                                           config.optimizer.name, explicit)
        train(config, FLAGS.workdir, stop_after=FLAGS.stop_after)
    except ValueError as e:
        _error(str(e).splitlines()[0] if str(e) else repr(e))
    except NonFiniteError as e:
        _error(str(e), code=3)


if __name__ == "__main__":
    app.run(main)
