"""`python -m optaxlab.sweep.group GROUP_DIR`: run the points of GROUP_DIR/group.json as one
vectorized program (`optaxlab.train.vectorized.train_group`); the sweep's `GroupRunner` starts
it, one process per group, as `SubprocessRunner` starts one trainer per point.

group.json: {"config": the base config file, "members": [{"name", "overrides", "workdir"}]};
a member with "frozen": true diverged in an earlier run of this group and is only carried along
(its slot in the group's checkpoint), so its files are left as they are.
Each member's config is built exactly as its solo trainer command would build it
(`spec.point_config`). At the end GROUP_DIR/codes.json maps every member to the exit code its
solo run would have had (0 finished or preempted, 2 bad config, 3 diverged, 4 I/O, 5 locked,
130 SIGINT, 1 bug), and each member's train.log gets its last line (the outcome, or
`error: ...`), so the sweep reads a grouped point exactly like a solo one.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import traceback
from pathlib import Path

from optaxlab.sweep import outcome

GROUP_FILE = "group.json"
CODES_FILE = "codes.json"


def _member_lines(members, lines: list[str]) -> None:
    for m, line in zip(members, lines, strict=True):
        if m.get("frozen"):  # a diverged member resumed with its group: its log is complete
            continue
        try:
            with open(Path(m["workdir"]) / "train.log", "a") as f:
                f.write(line + "\n")
        except OSError:
            pass


def run(group_dir: Path) -> int:
    """Run the group; returns 0 once codes.json is written (1 if even that failed)."""
    from optaxlab.sweep import spec
    from optaxlab.train import errors
    from optaxlab.train import vectorized as V

    group_dir = Path(group_dir)
    data = json.loads((group_dir / GROUP_FILE).read_text())
    members = data["members"]
    config_file, _, arg = str(data["config"]).partition(":")
    try:
        base = spec.load_config_file(Path(config_file), arg or None)
        file_optimizer = copy.deepcopy(base.optimizer)
        configs = [spec.point_config(base, file_optimizer, m["overrides"], m["name"])
                   for m in members]
        print(f"vectorized group of {len(members)} member(s): "
              f"{', '.join(m['name'] for m in members)}", file=sys.stderr, flush=True)
        result = V.train_group(configs, [m["workdir"] for m in members], group_dir)
        codes, messages = result.exit_codes, result.messages
    except Exception as e:  # noqa: BLE001 - every member gets the outcome's code
        code = errors.exit_code(e)
        if isinstance(e, spec.SweepError):
            code = errors.BAD_INPUT
        if code == errors.BUG:
            traceback.print_exception(e)
        msg = (f"I/O failure: {errors.io_failure(e)}" if code == errors.IO_FAILURE
               else errors.one_line(e))
        codes, messages = [code] * len(members), [msg] * len(members)
        print(f"error: {msg}", file=sys.stderr, flush=True)
    except KeyboardInterrupt as e:
        codes = [errors.INTERRUPTED] * len(members)
        messages = [f"interrupted: {errors.one_line(e)}"] * len(members)
    _member_lines(members, [m if c in (0, errors.INTERRUPTED) else f"error: {m}"
                            for c, m in zip(codes, messages, strict=True)])
    outcome.write_json(group_dir / CODES_FILE, {m["name"]: int(c)
                                         for m, c in zip(members, codes, strict=True)})
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m optaxlab.sweep.group GROUP_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("optaxlab.train").setLevel(logging.INFO)
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    return run(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main())
