"""A tiny folder of meshes in the OFF layout of Debian's libcgal-demo files: four closed solids (a cube, a long box,
an octahedron, a tetrahedron) and one open mesh, which the solid-mesh DataModule must skip and name."""
from __future__ import annotations

from pathlib import Path

CUBE_V = [(x, y, z) for x in (0, 2) for y in (0, 2) for z in (0, 2)]
# outward quads of the cube [0, 2]³ (vertex i = 4x + 2y + z in bits), as an OFF file writes polygons
CUBE_F = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
OCTA_V = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
OCTA_F = [(0, 2, 4), (2, 1, 4), (1, 3, 4), (3, 0, 4), (2, 0, 5), (1, 2, 5), (3, 1, 5), (0, 3, 5)]
TETRA_V = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
TETRA_F = [(0, 2, 1), (0, 1, 3), (0, 3, 2), (1, 2, 3)]


def write_off(path: Path, vertices, faces) -> Path:
    lines = ["OFF", f"{len(vertices)} {len(faces)} 0"]
    lines += [" ".join(map(str, v)) for v in vertices]
    lines += [f"{len(f)} " + " ".join(map(str, f)) for f in faces]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_meshes(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_off(folder / "cube.off", CUBE_V, CUBE_F)
    write_off(folder / "long_box.off", [(4 * x, y, z) for x, y, z in CUBE_V], CUBE_F)
    write_off(folder / "octahedron.off", OCTA_V, OCTA_F)
    write_off(folder / "tetrahedron.off", TETRA_V, TETRA_F)
    write_off(folder / "open_cube.off", CUBE_V, CUBE_F[:-1])
    return folder
