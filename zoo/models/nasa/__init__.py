"""NASA (paper 21): articulated bodies as blended per-part occupancy networks, rigid (R) or pose-deformable (D)."""
from zoo.models.nasa.model import NASA, NASAOutput, PartMLPs, blend, nasa_losses, to_part_frames
from zoo.models.nasa.module import NASAModule

__all__ = ["NASA", "NASAModule", "NASAOutput", "PartMLPs", "blend", "nasa_losses", "to_part_frames"]
