""" Exact top-k inner-product search with bounded memory.

:func:`topk_inner_product` scores queries against keys one block at a time (a block holds at most
``max_block_elements`` scores) and merges the running top-k, so memory stays bounded whatever the
number of keys. :class:`ExactIndex` stores vectors (float32, or float16 to halve the memory) and
searches them with it, or with ``faiss.IndexFlatIP`` once the index holds ``faiss_threshold``
vectors and faiss-cpu is installed: both are exact, so they return the same neighbours.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch

__all__ = ['topk_inner_product', 'ExactIndex', 'faiss_available', 'DEFAULT_FAISS_THRESHOLD']

# On an idle 2-core machine faiss.IndexFlatIP searched 10^4-10^6 vectors 1.5-1.9x faster than the
# blocked torch search (scripts/bench_memory.py, docs/benchmarks.md); under heavy load it fell behind,
# and it keeps a float32 copy of the vectors, so it takes over only for large indexes.
DEFAULT_FAISS_THRESHOLD: Optional[int] = 100_000
_MAX_BLOCK_ELEMENTS = 1 << 24  # 64 MB of float32 scores per block


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def topk_inner_product(
        queries: torch.Tensor,
        keys: Union[torch.Tensor, Sequence[torch.Tensor]],
        k: int,
        max_block_elements: int = _MAX_BLOCK_ELEMENTS,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` keys of largest inner product with each query, best first.

    Args:
        queries: (Q, D) float tensor.
        keys: (N, D) tensor, or a sequence of (N_i, D) tensors searched as their concatenation
            (so that a growing index never needs a concatenated copy); float16 keys are scored in
            float32, one block at a time.
        k: number of neighbours; more than N returns all N.
        max_block_elements: bound on the number of scores held at once (plus the running top-k).

    Returns:
        (scores, indices), both (Q, min(k, N)); indices count across the concatenated keys.
    """
    parts = [keys] if isinstance(keys, torch.Tensor) else list(keys)
    if queries.dim() != 2 or any(p.dim() != 2 or p.shape[1] != queries.shape[1] for p in parts):
        raise ValueError(
            f'topk_inner_product needs (Q, D) queries and (N, D) keys of the same D, got '
            f'{tuple(queries.shape)} and {[tuple(p.shape) for p in parts]}.')
    if k < 1:
        raise ValueError(f'k must be >= 1, got {k}.')
    num_keys = sum(p.shape[0] for p in parts)
    if num_keys == 0:
        raise ValueError('Cannot search an empty set of keys.')
    k = min(k, num_keys)
    queries = queries.float()
    # a block is (query_block x key_block) scores plus a float32 copy of key_block keys
    key_block = min(num_keys, max(k, max_block_elements // max(queries.shape[1], min(queries.shape[0], 1024))))
    query_block = max(1, max_block_elements // key_block)
    blocks = [(offset + start, part[start:start + key_block])
              for offset, part in zip(_offsets(parts), parts) for start in range(0, part.shape[0], key_block)]

    all_scores, all_indices = [], []
    for q0 in range(0, queries.shape[0], query_block):
        q = queries[q0:q0 + query_block]
        best_scores = best_indices = None
        for first, block in blocks:
            scores, indices = (q @ block.float().T).topk(min(k, block.shape[0]), dim=1)
            indices += first
            if best_scores is not None:
                # merge the running top-k with this block's top-k
                scores = torch.cat([best_scores, scores], dim=1)
                indices = torch.cat([best_indices, indices], dim=1)
                scores, order = scores.topk(k, dim=1)
                indices = indices.gather(1, order)
            best_scores, best_indices = scores, indices
        all_scores.append(best_scores)
        all_indices.append(best_indices)
    return torch.cat(all_scores), torch.cat(all_indices)


def _offsets(parts: Sequence[torch.Tensor]) -> List[int]:
    offsets, total = [], 0
    for part in parts:
        offsets.append(total)
        total += part.shape[0]
    return offsets


class ExactIndex:
    """A growable store of vectors with exact maximum-inner-product search.

    Vectors are kept in the chunks they were added in and searched as one (no concatenated copy).

    Args:
        dim: vector dimension.
        dtype: storage dtype, float32 or float16 (half the memory; scores are computed in float32).
        faiss_threshold: with faiss-cpu installed and float32 storage, search with
            ``faiss.IndexFlatIP`` once the index holds at least this many vectors (it keeps a
            float32 copy). ``None`` never uses faiss.
    """

    def __init__(
            self,
            dim: int,
            dtype: torch.dtype = torch.float32,
            faiss_threshold: Optional[int] = DEFAULT_FAISS_THRESHOLD,
    ):
        if dtype not in (torch.float32, torch.float16):
            raise ValueError(f'ExactIndex stores float32 or float16 vectors, got {dtype}.')
        self.dim = dim
        self.dtype = dtype
        self.faiss_threshold = faiss_threshold
        self._chunks: List[torch.Tensor] = []
        self._size = 0
        self._faiss_index = None

    def __len__(self) -> int:
        return self._size

    @property
    def vectors(self) -> torch.Tensor:
        """All stored vectors, (N, D), in the storage dtype (one tensor; searches need none)."""
        if len(self._chunks) != 1:
            self._chunks = [torch.cat(self._chunks) if self._chunks else torch.empty(0, self.dim, dtype=self.dtype)]
        return self._chunks[0]

    def add(self, vectors: torch.Tensor) -> None:
        if vectors.dim() != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f'Expected (N, {self.dim}) vectors, got {tuple(vectors.shape)}.')
        self._chunks.append(vectors.detach().to('cpu', self.dtype).contiguous())
        self._size += vectors.shape[0]
        self._faiss_index = None  # rebuilt on the next search

    @property
    def uses_faiss(self) -> bool:
        return (
            self.faiss_threshold is not None and self.dtype == torch.float32
            and self._size >= self.faiss_threshold and faiss_available())

    def search(self, queries: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(scores, indices) of the ``k`` stored vectors of largest inner product, best first."""
        if self._size == 0:
            raise ValueError('The index is empty; add vectors before searching.')
        queries = queries.detach().to('cpu', torch.float32)
        if not self.uses_faiss:
            return topk_inner_product(queries, self._chunks, k)
        if self._faiss_index is None:
            import faiss
            self._faiss_index = faiss.IndexFlatIP(self.dim)
            for chunk in self._chunks:
                self._faiss_index.add(chunk.numpy())
        scores, indices = self._faiss_index.search(queries.contiguous().numpy(), min(k, self._size))
        return torch.from_numpy(scores), torch.from_numpy(indices)
