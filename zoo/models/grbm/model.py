"""The GRBM's math lives in `zoo.nn.grbm`, shared with Deep Lambertian Networks (whose albedo and normal priors are
GRBMs); this module keeps the paper package's own import path."""
from zoo.nn.grbm import GRBM, ChainStats, cosine_steps, few_threads_for_small, sample_bernoulli, softplus

__all__ = ["GRBM", "ChainStats", "cosine_steps", "few_threads_for_small", "sample_bernoulli", "softplus"]
