"""Drawing TSP instances and tours as images, differentiably in the edge weights.

The paper's encoding at 64 x 64: the background is 0, tour edges are lines of value 0.5, nodes are
dots of value 1 drawn over the lines; the image is then mapped to the prior's range [-1, 1]
(``2 v - 1``). Coordinates in the unit square map to pixel centres ``MARGIN .. size - 1 - MARGIN``
(x along columns, y along rows), so a dot at the border stays whole.

One function draws both the training images (a tour: its n edges with weight 1) and the relaxed
images the solver optimises (every candidate edge with a soft weight): the edge layer is
``min(1, sum_e w_e E_e)`` where ``E_e`` is edge e's anti-aliased line, so a hard adjacency renders
exactly as the training data did.

Example:
    >>> import torch
    >>> coords = torch.rand(2, 10, 2)
    >>> render_tours(coords, torch.arange(10).expand(2, 10)).shape
    torch.Size([2, 1, 64, 64])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "EDGE_VALUE",
    "IMAGE_SIZE",
    "EdgeImages",
    "compose",
    "edge_images",
    "node_layer",
    "render_edges",
    "render_tours",
    "to_pixels",
]

IMAGE_SIZE = 64
MARGIN = 2.0
EDGE_VALUE = 0.5
#: a pixel is fully covered within 0.5 px of a line or dot centre, and not at all beyond 1.5 px
_FULL, _FADE = 0.5, 1.0
_CHUNK = 262144  # distance evaluations held at once per chunk, x 1 pixel row


def to_pixels(coords: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Unit-square coordinates (..., 2) -> pixel positions (..., 2) as (column, row)."""
    return MARGIN + coords * (size - 1 - 2 * MARGIN)


def _pixel_grid(size: int, device: torch.device) -> torch.Tensor:
    r = torch.arange(size, device=device, dtype=torch.float32)
    rows, cols = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([cols.reshape(-1), rows.reshape(-1)], dim=-1)  # (P, 2) as (x, y)


def _profile(dist: torch.Tensor) -> torch.Tensor:
    return ((_FULL + _FADE - dist) / _FADE).clamp(0.0, 1.0)


def _segment_profile(a: torch.Tensor, b: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Line intensity of segments a -> b (..., 2) at every pixel: (..., P)."""
    ab = b - a
    ap = grid - a[..., None, :]  # (..., P, 2)
    denom = (ab * ab).sum(-1, keepdim=True).clamp_min(1e-12)
    s = ((ap * ab[..., None, :]).sum(-1) / denom).clamp(0.0, 1.0)  # (..., P)
    closest = a[..., None, :] + s[..., None] * ab[..., None, :]
    return _profile((grid - closest).norm(dim=-1))


def node_layer(coords: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Dots of the nodes (B, n, 2) -> (B, P) in [0, 1]."""
    grid = _pixel_grid(size, coords.device)
    px = to_pixels(coords.float(), size)
    dist = (grid[None, None] - px[:, :, None, :]).norm(dim=-1)  # (B, n, P)
    return _profile(dist).amax(dim=1)


def compose(nodes: torch.Tensor, edges: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Node layer and edge layer (B, P) -> image (B, 1, size, size) in [-1, 1]."""
    value = nodes + (1 - nodes) * EDGE_VALUE * edges.clamp(max=1.0)
    return (2 * value - 1).view(-1, 1, size, size)


def render_edges(
    coords: torch.Tensor, edges: torch.Tensor, weights: torch.Tensor | None = None, size: int = IMAGE_SIZE
) -> torch.Tensor:
    """Draw weighted edges (tours, training batches) through :func:`edge_images`.

    Args:
        coords: (B, n, 2) in the unit square.
        edges: (B, M, 2) node indices.
        weights: (B, M) edge weights; ``None`` means 1.
        size: image side in pixels.

    Returns:
        (B, 1, size, size) in [-1, 1].
    """
    w = torch.ones(edges.shape[:2], device=coords.device) if weights is None else weights
    return edge_images(coords, edges, size).render(w)


def render_tours(coords: torch.Tensor, tours: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Images of closed tours: coords (B, n, 2), tours (B, n) -> (B, 1, size, size) in [-1, 1]."""
    tours = tours.long()
    edges = torch.stack([tours, tours.roll(-1, dims=1)], dim=-1)
    return render_edges(coords, edges, None, size)


@dataclass
class EdgeImages:
    """Every candidate edge of a batch drawn once, stored sparsely: the solver's renderer.

    Attributes:
        nodes: the fixed node layer (B, P).
        edge: flat index of each stored pixel's edge into the (B * M) edge weights.
        pixel: flat index of each stored pixel into the (B * P) image.
        value: the edge's line intensity there.
        size: image side.
    """

    nodes: torch.Tensor
    edge: torch.Tensor
    pixel: torch.Tensor
    value: torch.Tensor
    size: int

    def render(self, weights: torch.Tensor) -> torch.Tensor:
        """Weights (B, M) of the candidate edges -> image (B, 1, size, size); differentiable."""
        flat = torch.zeros(self.nodes.numel(), device=weights.device, dtype=weights.dtype)
        flat = flat.index_add(0, self.pixel, weights.reshape(-1)[self.edge] * self.value)
        return compose(self.nodes, flat.view_as(self.nodes), self.size)


def edge_images(coords: torch.Tensor, edges: torch.Tensor, size: int = IMAGE_SIZE) -> EdgeImages:
    """Draw the candidate edges (B, M, 2) of instances (B, n, 2) once, for :meth:`EdgeImages.render`."""
    device = coords.device
    grid = _pixel_grid(size, device)
    px = to_pixels(coords.float(), size)
    b_, m, _ = edges.shape
    p = grid.shape[0]
    a = torch.gather(px, 1, edges[..., :1].expand(-1, -1, 2)).reshape(-1, 2)
    b = torch.gather(px, 1, edges[..., 1:].expand(-1, -1, 2)).reshape(-1, 2)
    chunk = max(1, _CHUNK // p)
    idx_e, idx_p, vals = [], [], []
    for start in range(0, a.shape[0], chunk):
        prof = _segment_profile(a[start : start + chunk], b[start : start + chunk], grid)
        e, q = torch.nonzero(prof, as_tuple=True)
        vals.append(prof[e, q])
        e = e + start
        idx_e.append(e)
        idx_p.append((e // m) * p + q)
    return EdgeImages(
        nodes=node_layer(coords, size),
        edge=torch.cat(idx_e),
        pixel=torch.cat(idx_p),
        value=torch.cat(vals),
        size=size,
    )
