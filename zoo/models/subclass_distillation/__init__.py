"""Subclass Distillation (paper 20): a teacher that splits each class into subclasses it invents, and a student
distilled on the teacher's subclass probabilities, on the 2x5 superclass construction."""
from zoo.models.subclass_distillation.data import SuperclassIDXDataModule
from zoo.models.subclass_distillation.module import SubclassStudent, SubclassTeacher

__all__ = ["SubclassStudent", "SubclassTeacher", "SuperclassIDXDataModule"]
