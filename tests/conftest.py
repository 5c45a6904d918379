"""Test-session setup: 8 simulated CPU devices and float32 defaults.

The flag must be set before jax is imported anywhere, which is why it lives here.
Single-device code runs on device 0 as usual; sharding tests build meshes over all 8.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
