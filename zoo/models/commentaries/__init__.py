"""Teaching with Commentaries (paper 14, arXiv 2011.03037): the commentary networks and both learning algorithms
(model.py), the Lightning modules for example weighting and label-dependent blending (module.py) and the
measurements of a learned commentary (analysis.py)."""
from zoo.models.commentaries.model import Student, WeightingTeacher
from zoo.models.commentaries.module import CommentaryBlending, CommentaryWeighting

__all__ = ["CommentaryBlending", "CommentaryWeighting", "Student", "WeightingTeacher"]
