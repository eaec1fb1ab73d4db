"""CvxNet: Learnable Convex Decomposition (paper 22): shapes as unions of smooth convexes decoded from an image."""
from zoo.models.cvxnet.model import ConvexDecoder, ConvexParams, CvxNet, MultiConvex, Occupancy, cvxnet_losses
from zoo.models.cvxnet.module import CvxNetModule

__all__ = ["ConvexDecoder", "ConvexParams", "CvxNet", "CvxNetModule", "MultiConvex", "Occupancy", "cvxnet_losses"]
