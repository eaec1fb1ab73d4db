"""Deep Lambertian Networks (paper 37): albedo, surface normals and light as the latents of a Lambertian image, with
GRBM priors over albedo and normals and block Gibbs inference from a single image."""
from zoo.models.deep_lambertian.model import DeepLambertianNetwork, Latents, render
from zoo.models.deep_lambertian.module import DeepLambertianModule

__all__ = ["DeepLambertianModule", "DeepLambertianNetwork", "Latents", "render"]
