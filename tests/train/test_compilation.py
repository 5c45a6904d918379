"""compile_shared: processes that need the same programs at the same time compile each once."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from optaxlab.train import compilation

ROOT = Path(__file__).resolve().parents[2]

WORKER = textwrap.dedent("""
    import json, pathlib, sys, time
    import jax, jax.numpy as jnp
    from optaxlab.train import compilation

    events = []
    jax.monitoring.register_event_listener(lambda event, **_: events.append(event))

    def program(c):
        def f(x):
            for i in range(40):
                x = jnp.sin(x * (c + i) + x @ x.T)
            return x
        return jax.jit(f)

    x = jnp.linspace(-1.0, 1.0, 32 * 32).reshape(32, 32)
    lowered = {"a": program(1.0).lower(x), "b": program(2.0).lower(x)}
    folder = pathlib.Path(sys.argv[1])
    if sys.argv[3:] == ["hold"]:  # hold program a's lock until killed
        lock = compilation.cache_dir() / compilation.LOCK_DIR
        lock.mkdir(parents=True, exist_ok=True)
        with compilation._lock(lock / f"{compilation.program_key(lowered['a'])}.lock", True):
            print("held", flush=True)
            time.sleep(600)
    (folder / f"ready{sys.argv[2]}").touch()
    while not (folder / "go").exists():  # both start compiling together
        time.sleep(0.005)
    events.clear()
    compiled = compilation.compile_shared(lowered)
    counts = {"hits": events.count("/jax/compilation_cache/cache_hits"),
              "misses": events.count("/jax/compilation_cache/cache_misses")}
    print(json.dumps({**counts, "values": {n: float(c(x).sum()) for n, c in compiled.items()}}))
""")


def env(cache: Path) -> dict:
    e = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PLATFORMS="cpu")
    e.pop("XLA_FLAGS", None)
    return e


def test_two_processes_compile_each_program_once_and_get_the_same_executables(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(i)], cwd=ROOT,
                              env=env(tmp_path / "cache"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs), \
            [p.communicate() for p in procs]
        time.sleep(0.01)
    (tmp_path / "go").touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    # Each of the two programs was compiled by exactly one process and loaded by the other
    # (without the locks both processes miss the cache for both: 4 misses, 0 hits).
    assert sum(r["misses"] for r in results) == 2, results
    assert sum(r["hits"] for r in results) == 2, results
    assert results[0]["values"] == results[1]["values"]
    assert results[0]["values"]["a"] != results[0]["values"]["b"]
    assert len(list((tmp_path / "cache" / compilation.LOCK_DIR).glob("*.lock"))) == 2


def test_a_killed_holder_does_not_block_and_no_cache_means_plain_compiles(tmp_path):
    f = jax.jit(lambda x: jnp.cumsum(x) * 2)
    x = jnp.arange(5.0)
    # Without a persistent cache (this test process): compiled here, no locks.
    assert compilation.cache_dir() is None
    np.testing.assert_array_equal(compilation.compile_shared({"f": f.lower(x)})["f"](x),
                                  np.cumsum(np.arange(5.0)) * 2)

    # A process holding program a's lock is killed (SIGKILL): the lock goes with it.
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    e = env(tmp_path / "cache")
    holder = subprocess.Popen([sys.executable, str(script), str(tmp_path), "0", "hold"],
                              cwd=ROOT, env=e, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (tmp_path / "go").touch()
        waiting = subprocess.Popen([sys.executable, str(script), str(tmp_path), "1"], cwd=ROOT,
                                   env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        while not (tmp_path / "ready1").exists():
            assert waiting.poll() is None, waiting.communicate()
            time.sleep(0.01)
        time.sleep(1.0)
        assert waiting.poll() is None  # waits for the holder
        holder.send_signal(signal.SIGKILL)
        out, err = waiting.communicate(timeout=300)
        assert waiting.returncode == 0, err[-3000:]
        result = json.loads(out.strip().splitlines()[-1])
        assert (result["misses"], result["hits"]) == (2, 0)
    finally:
        holder.kill()
        holder.wait()
