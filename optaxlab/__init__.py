"""optaxlab: transforms, theory and sharded trainers for studying adaptive optimizers.

Subpackages (import direction: transforms, theory <- optimizers, monitor <- train):
  optaxlab.transforms   GradientTransformations optax lacks (ACClip, Gaussian VI tracker, ...)
  optaxlab.optimizers   every studied optimizer as an optax.chain, plus a name registry
  optaxlab.theory       closed forms and Monte Carlo simulators from the papers
  optaxlab.models       Flax NNX models (transformer LM, small CNN, MLP)
  optaxlab.data         Grain input pipelines
  optaxlab.monitor      on-device update/gradient histograms and the theory overlay
  optaxlab.train        mesh, sharding, train step, loop, checkpoints, metric writing
"""

__version__ = "0.1.0"
