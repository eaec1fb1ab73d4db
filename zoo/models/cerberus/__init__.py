"""Cerberus (paper 26): a multi-headed derenderer of free-floating deformable parts, trained through a soft
rasteriser with viewpoint and articulation invariances of the parts' shapes."""
from zoo.models.cerberus.model import Cerberus, Parts, icosphere, render_parts, rotation_6d
from zoo.models.cerberus.module import CerberusModule

__all__ = ["Cerberus", "CerberusModule", "Parts", "icosphere", "render_parts", "rotation_6d"]
