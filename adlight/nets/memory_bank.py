"""Memory banks of normal patch features: greedy coreset selection and nearest-neighbour search.

**Coreset.** PatchCore's greedy k-center selection (Gonzalez's farthest-point rule) on a
random projection. No library we depend on implements it, and the textbook loop (one pass
over all N patches per pick, as anomalib 2.7.0's ``KCenterGreedy``) takes about an hour for
a 10% coreset of MVTec bottle at 256 px on 2 cores. :func:`greedy_coreset` makes the *same*
picks in rounds of matrix products: pick greedily inside a pool of the farthest patches for
as long as the best pool value beats the largest distance outside the pool (distances only
shrink, so each such pick is the textbook one), then update all distances at once (5 s
instead of about an hour on the same bank).

**Search.** k-nearest distances by faiss on the CPU (scikit-learn where faiss is missing),
by blocked torch matrix products on accelerators; queries go in blocks so memory stays
bounded. Measured on 2 cores, 85k queries against a 21k bank: faiss 3.6-4.4 s, torch
7.3-7.6 s, scikit-learn 8.8 s. Distances are float32 (bfloat16 products were 7x slower on
an AVX2 CPU, and float32's error on squared distances of order 100 was below 0.01).
``faiss_ivf`` is approximate: faiss' inverted file (k-means cells over the bank, exact
distances inside the cells a query probes); :func:`search_recall` measures it against exact
search (``docs/results.md`` has the numbers at 512 px).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from adlight.checks import check_fraction, is_int
from adlight.errors import ConfigError

SearchBackend = Literal["auto", "faiss", "sklearn", "torch", "faiss_ivf"]
SEARCH_BACKENDS = ("auto", "faiss", "sklearn", "torch", "faiss_ivf")

try:  # faiss-cpu is a dependency; scikit-learn stands in where it cannot be installed
    import faiss
except ImportError:  # pragma: no cover - exercised through backend="sklearn" in the tests
    faiss = None


def check_coreset_fraction(fraction: object) -> float:
    return check_fraction("coreset_fraction", fraction, zero=False, one=True)


def random_projection(in_dim: int, out_dim: int, seed: int, device=None) -> Tensor:
    """A Gaussian Johnson-Lindenstrauss matrix ``in_dim x out_dim`` (entries N(0, 1/out_dim)).

    Made with torch from a seed rather than scikit-learn's ``GaussianRandomProjection``,
    whose ``transform`` would take the features off their device into numpy.
    """
    generator = torch.Generator().manual_seed(seed)
    matrix = torch.randn(in_dim, out_dim, generator=generator) / math.sqrt(out_dim)
    return matrix.to(device)


def _min_squared_distances(points: Tensor, point_sq: Tensor, centres: Tensor, block_size: int) -> Tensor:
    """For each row of ``points``, the squared distance to its nearest row of ``centres``.

    Rows go in blocks whose ``rows x len(centres)`` product has about ``block_size`` entries:
    a block that stays in cache is what makes this fast (measured on 2 cores for 930
    centres: 1024-row blocks 0.23 s, 16384-row blocks 0.62 s).
    """
    chunk = max(64, block_size // max(1, centres.shape[0]))
    centre_sq = centres.pow(2).sum(1)
    out = torch.empty(points.shape[0], dtype=points.dtype, device=points.device)
    for start in range(0, points.shape[0], chunk):
        block = points[start:start + chunk]
        d2 = torch.addmm(centre_sq.unsqueeze(0), block, centres.T, alpha=-2.0)
        out[start:start + chunk] = d2.amin(1).add_(point_sq[start:start + chunk])
    return out.clamp_min_(0.0)


@torch.no_grad()
def greedy_coreset(
    features: Tensor,
    fraction: float,
    projection_dim: int | None = 64,
    seed: int = 0,
    pool_size: int = 2048,
    block_size: int = 2**19,
) -> Tensor:
    """Indices of a greedy k-center coreset of ``round(fraction * N)`` rows (at least 1).

    Args:
        features: N x D, on any device.
        fraction: share of the rows to keep, in (0, 1]; 1 keeps all (no selection).
        projection_dim: select on a Gaussian random projection to this many dimensions
            (``None``, or >= D: on the features themselves). Distances between projected
            patches approximate the true ones (Johnson-Lindenstrauss) at a fraction of the cost.
        seed: seeds the projection and the first pick.
        pool_size: candidates per round (see the module docstring); any value gives the
            same picks, larger ones take fewer, longer rounds.
        block_size: entries of the distance matrix computed at once (bounds memory).

    Returns:
        long tensor of indices into ``features``, in the order they were picked (so the
        first m of a coreset of size n are the coreset of size m).
    """
    fraction = check_coreset_fraction(fraction)
    if features.ndim != 2 or features.shape[0] == 0:
        raise ConfigError(f"a coreset needs an N x D tensor with N >= 1, got shape {tuple(features.shape)}")
    n = features.shape[0]
    target = max(1, round(fraction * n))
    if target >= n:
        return torch.arange(n, device=features.device)
    if projection_dim is not None and projection_dim < features.shape[1]:
        # block by block: candidates kept in float16 are never copied whole to float32
        projection = random_projection(features.shape[1], projection_dim, seed, features.device)
        points = torch.cat([block.float() @ projection for block in features.split(65536)])
    else:
        points = features.float()
    points = points.contiguous()
    point_sq = points.pow(2).sum(1)
    generator = torch.Generator().manual_seed(seed)
    first = int(torch.randint(n, (1,), generator=generator))
    picks = [first]
    distance = _min_squared_distances(points, point_sq, points[first:first + 1], block_size)
    distance[first] = -math.inf
    while len(picks) < target:
        pool_n = min(pool_size, n - 1)
        values, pool = torch.topk(distance, pool_n + 1)
        outside = float(values[-1])  # no patch outside the pool is farther than this
        pool, pool_values = pool[:-1], values[:-1].clone()
        pool_points, pool_sq = points[pool], point_sq[pool]
        pool_d2 = torch.addmm(pool_sq.unsqueeze(0), pool_points, pool_points.T, alpha=-2.0)
        pool_d2.add_(pool_sq.unsqueeze(1)).clamp_min_(0.0)
        chosen: list[int] = []
        while len(picks) + len(chosen) < target:
            best = int(torch.argmax(pool_values))
            if float(pool_values[best]) < outside:
                break  # a patch outside the pool may be farther: refresh all distances first
            chosen.append(best)
            torch.minimum(pool_values, pool_d2[best], out=pool_values)
            pool_values[best] = -math.inf  # never picked twice, even among duplicate rows
        # the first pool value is the largest distance of all, so every round picks one or more
        new = pool[torch.tensor(chosen, device=pool.device)]
        picks.extend(new.tolist())
        if len(picks) < target:
            torch.minimum(distance, _min_squared_distances(points, point_sq, points[new], block_size),
                          out=distance)
            distance[new] = -math.inf
    return torch.tensor(picks, dtype=torch.long, device=features.device)


def resolve_backend(backend: SearchBackend, device: torch.device) -> str:
    if backend not in SEARCH_BACKENDS:
        raise ConfigError(f"search must be one of {SEARCH_BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device.type != "cpu":
            return "torch"
        return "faiss" if faiss is not None else "sklearn"
    if backend in ("faiss", "faiss_ivf") and faiss is None:
        raise ConfigError(f"search: {backend} needs the faiss-cpu package: pip install faiss-cpu")
    return backend


def ivf_lists_for(bank_size: int) -> int:
    """Default IVF cell count: 4 sqrt(M) (faiss' guideline), with >= 39 bank rows per cell to train k-means."""
    return max(1, min(bank_size // 39, round(4 * math.sqrt(bank_size))))


def ivf_index(bank: Tensor, lists: int | None = None, seed: int = 0):
    """An approximate index of the bank: faiss IVF-Flat (k-means cells, exact distances inside probed cells).

    ``lists`` cells (default :func:`ivf_lists_for`); a search probes ``nprobe`` of them, so
    it compares a query with about ``nprobe / lists`` of the bank. Seeded k-means.
    """
    if faiss is None:
        raise ConfigError("search: faiss_ivf needs the faiss-cpu package: pip install faiss-cpu")
    data = np.ascontiguousarray(bank.detach().float().cpu().numpy())
    lists = ivf_lists_for(data.shape[0]) if lists is None else lists
    if not 1 <= lists <= data.shape[0]:
        raise ConfigError(f"ivf_lists must be in [1, {data.shape[0]}] (the bank size), got {lists!r}")
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(data.shape[1]), data.shape[1], lists)
    index.cp.seed = seed
    index.train(data)
    index.add(data)
    return index


def search_recall(approximate: Tensor, exact: Tensor, tolerance: float = 1e-3) -> float:
    """Share of queries whose approximate nearest distance is the exact one (recall@1 by distance).

    Equal within ``tolerance`` x max(1, distance): faiss' exact search expands |q - b|^2 into
    |q|^2 + |b|^2 - 2 q.b, its IVF search does not, and in float32 the two differ by ~1e-4 on
    near-zero distances of features of norm ~10 (by bank-row index, duplicate rows would count
    as misses).
    """
    if approximate.shape != exact.shape:
        raise ValueError(f"shapes differ: {tuple(approximate.shape)} vs {tuple(exact.shape)}")
    found = (approximate[:, 0] - exact[:, 0]).abs() <= tolerance * exact[:, 0].abs().clamp_min(1.0)
    return float(found.float().mean()) if found.numel() else math.nan


def _check_k(k: object, bank_size: int) -> int:
    if not is_int(k) or not 1 <= k <= bank_size:
        raise ConfigError(f"k must be an int in [1, {bank_size}] (the bank size), got {k!r}")
    return k


def exact_distances(queries: Tensor, bank: Tensor, bank_sq: Tensor, k: int, bank_chunk: int) -> Tensor:
    """Q x k Euclidean distances to the k nearest bank rows (ascending), in tensor operations only.

    ``|q - b|^2 = |q|^2 + (|b|^2 - 2 q.b)``: the bracket is one Gemm per chunk of ``bank_chunk``
    rows (bias ``|b|^2``, alpha -2), and ``|q|^2`` is added after the min, which it does not
    change; the chunks keep memory at Q x chunk. Traced, it is the exported search (ONNX Runtime
    took 284 ms per image with the three Q x chunk passes of the plain formula, on 2 cores).
    """
    best = None
    for start in range(0, bank.shape[0], bank_chunk):
        stop = start + bank_chunk
        partial = torch.addmm(bank_sq[start:stop], queries, bank[start:stop].T, alpha=-2.0)
        if k == 1:
            part = partial.amin(1, keepdim=True)
            best = part if best is None else torch.minimum(best, part)
        else:
            part = torch.topk(partial, min(k, partial.shape[1]), dim=1, largest=False).values
            both = part if best is None else torch.cat([best, part], dim=1)
            best = torch.topk(both, min(k, both.shape[1]), dim=1, largest=False).values
    return (best + queries.pow(2).sum(1, keepdim=True)).clamp_min(0.0).sqrt()


class BankSearch(nn.Module):
    """k-nearest Euclidean distances to a memory bank (a buffer): queries Q x D -> Q x k, ascending.

    One search for eager scoring and export. Traced (``adlight/export``) or on the ``torch``
    backend it is :func:`exact_distances`; eagerly on the CPU faiss is the fast path (see the
    module docstring), scikit-learn its stand-in, and ``faiss_ivf`` the approximate index.

    Args:
        bank: M x D normal patch features (shared with the model's ``memory_bank``, not copied).
        k: neighbours per query (<= M).
        backend: ``auto``, ``faiss``, ``sklearn``, ``torch`` or ``faiss_ivf`` (:func:`resolve_backend`).
        batch_size: queries per block of an eager search; bounds its memory.
        bank_chunk: bank rows compared at once by :func:`exact_distances` (``None``: the whole
            bank eagerly, where the query blocks bound memory; an export sets it).
        index: a prebuilt :func:`ivf_index` of ``bank`` for ``faiss_ivf`` (``None``: built on
            the first search with ``ivf_lists`` cells and ``seed``); ``ivf_probes`` cells are
            visited per query.
    """

    def __init__(self, bank: Tensor, k: int = 1, backend: SearchBackend = "auto", batch_size: int = 16384,
                 bank_chunk: int | None = None, index=None, ivf_lists: int | None = None,
                 ivf_probes: int = 8, seed: int = 0) -> None:
        super().__init__()
        self.k = _check_k(k, bank.shape[0])
        if backend not in SEARCH_BACKENDS:
            raise ConfigError(f"search must be one of {SEARCH_BACKENDS}, got {backend!r}")
        self.register_buffer("bank", bank if bank.dtype == torch.float32 else bank.float())
        self.register_buffer("bank_sq", self.bank.pow(2).sum(1))
        self.backend, self.batch_size, self.bank_chunk = backend, int(batch_size), bank_chunk
        self.index, self.ivf_lists, self.ivf_probes, self.seed = index, ivf_lists, int(ivf_probes), int(seed)

    def forward(self, queries: Tensor) -> Tensor:
        if queries.shape[1:] != self.bank.shape[1:]:
            raise ConfigError(f"queries have {queries.shape[1]} features, the bank {self.bank.shape[1]}")
        queries = queries.float()
        if torch.jit.is_tracing():  # the exported graph: the whole batch, chunks of the bank
            return exact_distances(queries, self.bank, self.bank_sq, self.k,
                                   max(1, int(self.bank_chunk or self.bank.shape[0])))
        resolved = resolve_backend(self.backend, queries.device)
        if resolved == "torch":
            return self._torch_search(queries)
        return self._library_search(queries, resolved)

    def _torch_search(self, queries: Tensor) -> Tensor:
        # the (rows x M) distance block is the memory: about 4M entries (16 MB); measured on
        # 2 cores, 85k queries against 21k bank patches: 256-row blocks 6.6 s, 1024-row 8.4 s
        rows = max(1, min(self.batch_size, 2**22 // max(1, self.bank.shape[0])))
        chunk = max(1, int(self.bank_chunk or self.bank.shape[0]))
        parts = [exact_distances(block, self.bank, self.bank_sq, self.k, chunk)
                 for block in queries.split(rows)]
        return torch.cat(parts) if parts else queries.new_zeros(0, self.k)

    def _library_search(self, queries: Tensor, resolved: str) -> Tensor:
        device, k = queries.device, self.k
        if resolved == "faiss_ivf":
            if self.index is None:
                self.index = ivf_index(self.bank, self.ivf_lists, self.seed)
            self.index.nprobe = self.ivf_probes
        else:  # the exact backends search the bank itself
            bank_np = np.ascontiguousarray(self.bank.detach().cpu().numpy())
        if resolved == "sklearn":
            from sklearn.neighbors import NearestNeighbors

            search = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(bank_np)
        parts = []
        for start in range(0, queries.shape[0], self.batch_size):
            block = np.ascontiguousarray(queries[start:start + self.batch_size].detach().cpu().numpy())
            if resolved == "faiss":
                d2, _ = faiss.knn(block, bank_np, k)
                parts.append(np.sqrt(np.maximum(d2, 0.0)))
            elif resolved == "faiss_ivf":
                d2, _ = self.index.search(block, k)
                # a query whose probed cells hold fewer than k rows gets faiss' largest float
                # for the missing ones: far, never near
                parts.append(np.sqrt(np.maximum(d2, 0.0)))
            else:
                distances, _ = search.kneighbors(block)
                parts.append(distances.astype(np.float32))
        out = np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.float32)
        return torch.from_numpy(out).to(device)


@torch.no_grad()
def nearest_distances(
    queries: Tensor,
    bank: Tensor,
    k: int = 1,
    backend: SearchBackend = "auto",
    batch_size: int = 16384,
    index=None,
    probes: int = 8,
) -> Tensor:
    """Euclidean distances (Q x k, ascending) from each query row to its k nearest bank rows:
    a one-off :class:`BankSearch` (queries and bank on the same device).

    Args:
        queries: Q x D; bank: M x D, on the same device.
        k: neighbours per query (<= M).
        backend: ``faiss``, ``sklearn`` (both CPU), ``torch`` (any device) or ``auto``
            (faiss on the CPU when installed, else scikit-learn; torch on accelerators).
        batch_size: queries per block; bounds the memory of the search.
        index, probes: for ``faiss_ivf``, the :func:`ivf_index` of ``bank`` (built here when
            ``None``; pass it to reuse it) and how many of its cells a query visits.
    """
    _check_k(k, bank.shape[0])
    return BankSearch(bank, k, backend, batch_size, index=index, ivf_probes=probes)(queries)
