"""Exit codes of the run-ending exceptions (`optaxlab.train.errors`)."""

from optaxlab.train import errors


def test_stalled_has_its_own_exit_code():
    assert errors.STALLED == 6
    codes = {errors.FINISHED, errors.BUG, errors.BAD_INPUT, errors.DIVERGED, errors.IO_FAILURE,
             errors.LOCKED, errors.INTERRUPTED}
    assert errors.STALLED not in codes
    assert errors.exit_code(errors.StalledError("loss flat for 50 steps")) == errors.STALLED
    assert errors.exit_code(errors.NonFiniteError("nan loss")) == errors.DIVERGED
    assert "6    stalled" in errors.__doc__
