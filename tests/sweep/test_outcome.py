"""A point's outcome from its workdir files, and the point lock (a real flock, a real kill)."""

import json
import signal
import subprocess
import sys
import time

import pytest

from optaxlab.sweep import outcome
from optaxlab.sweep.outcome import classify

NONFINITE = ("error: non-finite gradient at step 7 (first offending parameter: blocks.0.mlp); "
             "nan_policy='halt' stopped the run")


@pytest.mark.parametrize(("evidence", "expected"), [
    (dict(final_checkpoint=True, exit_code=0), (outcome.FINISHED, None)),
    (dict(status={"status": "finished", "step": 10}), (outcome.FINISHED, None)),
    (dict(exit_code=3, log=["I1201 step 5", NONFINITE]), (outcome.DIVERGED, 7)),
    # status.json (the trainer, contract item 2) wins over the log for the step.
    (dict(exit_code=3, status={"status": "diverged", "diverged_step": 5}, log=[NONFINITE]),
     (outcome.DIVERGED, 5)),
    (dict(exit_code=3, log=["no step in here"], step=4), (outcome.DIVERGED, 5)),
    (dict(exit_code=2, log=["x", "error: config.optimizer.b2: must be in [0, 1)"]),
     (outcome.INVALID, None)),
    # exit 2 writes nothing: a status.json from an earlier attempt is ignored.
    (dict(exit_code=2, status={"status": "diverged", "diverged_step": 3}, log=["error: x"]),
     (outcome.INVALID, None)),
    (dict(exit_code=137, step=12), (outcome.FAILED, None)),
    (dict(exit_code=1, log=["Traceback", "KeyError: 'x'"]), (outcome.FAILED, None)),
    (dict(exit_code=4, status={"status": "failed", "message": "disk full"}),
     (outcome.FAILED, None)),
    (dict(exit_code=143, step=12), (outcome.INTERRUPTED, None)),
    (dict(exit_code=130, step=12), (outcome.INTERRUPTED, None)),
    (dict(exit_code=0, status={"status": "preempted"}, step=12), (outcome.INTERRUPTED, None)),
    (dict(status={"status": "preempted"}, step=12), (outcome.INTERRUPTED, None)),
    (dict(status={"status": "diverged", "diverged_step": 9}), (outcome.DIVERGED, 9)),
    (dict(step=12), (outcome.INTERRUPTED, None)),  # killed with its driver: no exit record
    (dict(exit_code=5, step=12), (outcome.INTERRUPTED, None)),  # locked: says nothing
    (dict(), (outcome.PENDING, None)),
])
def test_classify(evidence, expected):
    kw = dict(exit_code=None, status=None, log=[], step=0, steps=20, final_checkpoint=False)
    state = classify(**{**kw, **evidence})
    assert (state.status, state.diverged_step) == expected
    if state.status == outcome.FAILED:
        assert state.message  # the reason is recorded
    if evidence.get("exit_code") == 137:
        assert "SIGKILL" in state.message
    if state.status == outcome.INVALID:
        assert state.message.startswith("error: ")


def test_a_point_that_finished_while_its_sweep_was_killed_has_the_trainers_exit_code():
    # No exit_code file (the driver died first): status.json's code, as the --print-commands
    # wrapper would have recorded (the sweep kill test saw '' against '0' before).
    kw = dict(log=[], step=20, steps=20, final_checkpoint=True)
    state = classify(exit_code=None, status={"status": "finished", "exit_code": 0}, **kw)
    assert (state.status, state.exit_code) == (outcome.FINISHED, 0)
    assert classify(exit_code=None, status=None, **kw).exit_code is None
    assert classify(exit_code=0, status={"status": "finished", "exit_code": 7},
                    **kw).exit_code == 0  # the recorded exit status wins


def test_point_state_reads_the_files(tmp_path):
    wd = tmp_path / "p"
    wd.mkdir()
    assert outcome.point_state(wd, 4).status == outcome.PENDING
    (wd / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n"
                                              for s in (1, 2, 3)) + '{"step": 4, "lo')
    assert outcome.point_state(wd, 4).status == outcome.INTERRUPTED  # torn last line ignored
    assert outcome.point_state(wd, 4).step == 3
    (wd / "train.log").write_text("old attempt\nerror: old\n" + outcome.ATTEMPT_HEADER
                                  + " at t <==\n" + NONFINITE + "\n")
    st = outcome.record_attempt(wd, "p", 4, {"wall_s": 1.5, "exit_code": 3}, 3)
    assert (st.status, st.diverged_step) == (outcome.DIVERGED, 7)
    assert outcome.point_state(wd, 4) == st
    rec = outcome.read_outcome(wd)
    assert rec["status"] == "diverged" and rec["log_tail"] == [NONFINITE]
    assert rec["wall_s"] == 1.5 and rec["attempts"][0]["status"] == "diverged"
    outcome.begin_attempt(wd)  # a new attempt: the old exit code no longer applies
    assert outcome.read_exit_code(wd) is None
    (wd / "checkpoints" / "4").mkdir(parents=True)
    assert outcome.point_state(wd, 4).status == outcome.FINISHED


def test_point_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    a, b = outcome.PointLock(tmp_path), outcome.PointLock(tmp_path)
    assert not outcome.is_locked(tmp_path)
    assert a.acquire()
    assert outcome.lock_info(tmp_path)["sweep_pid"] > 0
    assert not b.acquire() and outcome.is_locked(tmp_path)
    assert outcome.point_state(tmp_path, 4).status == outcome.RUNNING
    a.release()
    assert b.acquire()
    b.release()
    # A holder killed with SIGKILL releases the lock (the kernel drops its flock).
    code = ("import sys, time; from optaxlab.sweep.outcome import PointLock; "
            f"assert PointLock({str(tmp_path)!r}).acquire(); print('held', flush=True); "
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert outcome.is_locked(tmp_path) and not b.acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    deadline = time.time() + 10
    while outcome.is_locked(tmp_path) and time.time() < deadline:
        time.sleep(0.05)
    assert b.acquire()
    b.release()


# Fakes for the trainer side (health.policy=halt: exit 3 diverged / exit 6 stalled with status.json
# step + reason) until the trainer helper's branch lands.
def test_a_stalled_run_is_stalled_with_its_step_and_reason():
    st = classify(exit_code=6, log=["error: stalled"], step=40, steps=100, final_checkpoint=False,
                  status={"status": "stalled", "step": 30, "reason": "loss 2.30 not below 2.29"})
    assert (st.status, st.diverged_step, st.exit_code) == (outcome.STALLED, 30, 6)
    assert st.message == "loss 2.30 not below 2.29"
    assert outcome.STALLED in outcome.DONE


def test_a_loss_blow_up_is_diverged_with_its_reason():
    st = classify(exit_code=3, log=[], step=12, steps=100, final_checkpoint=False,
                  status={"status": "diverged", "step": 11, "reason": "loss 80 > 10 x initial 7"})
    assert (st.status, st.diverged_step) == (outcome.DIVERGED, 11)
    assert st.message.startswith("loss 80 > 10 x")


def test_status_json_alone_gives_stalled():
    st = classify(exit_code=None, log=[], step=40, steps=100, final_checkpoint=False,
                  status={"status": "stalled", "step": 25, "reason": "no progress",
                          "exit_code": 6})
    assert (st.status, st.diverged_step, st.message) == (outcome.STALLED, 25, "no progress")


def test_exit_codes_come_from_the_trainer():
    from optaxlab.train import errors
    assert (outcome.EXIT_STALLED, outcome.EXIT_NONFINITE, outcome.EXIT_CONFIG) == (
        errors.STALLED, errors.DIVERGED, errors.BAD_INPUT)


def test_a_stalled_point_scores_like_a_diverged_one_never_as_a_result():
    from optaxlab.sweep import report

    class _Plan:
        metric, goal = "final_eval_loss", "min"
    row = {"status": outcome.STALLED, "final_eval_loss": 0.1}
    assert report.score(row, _Plan()) == float("inf")
    assert report.score({**row, "status": outcome.FINISHED}, _Plan()) == 0.1
