"""DataModules for real dataset formats shared by several papers."""
from zoo.data.digits import DigitsDataModule
from zoo.data.idx import IDXDataModule, read_idx

__all__ = ["DigitsDataModule", "IDXDataModule", "read_idx"]
