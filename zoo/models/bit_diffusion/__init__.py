"""Analog Bits / Bit Diffusion (paper 3): analog bits, the cosine schedule, the samplers and the U-Net denoiser
(model.py), and the Lightning module with the EMA weights and the sample measures (module.py)."""
from zoo.models.bit_diffusion.model import AnalogBits, BitDiffusion, UNet
from zoo.models.bit_diffusion.module import BitDiffusionModule

__all__ = ["AnalogBits", "BitDiffusion", "BitDiffusionModule", "UNet"]
