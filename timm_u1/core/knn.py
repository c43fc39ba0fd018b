""" Exact top-k inner-product search with bounded memory.

:func:`topk_inner_product` scores queries against keys one block at a time (a block holds at most
``max_block_elements`` scores) and merges the running top-k, so memory stays bounded whatever the
number of keys. :class:`ExactIndex` stores vectors (float32, or float16 to halve the memory) and
searches them with it, or, once the index holds ``faiss_threshold`` vectors and faiss-cpu is
installed, with faiss's brute-force kernel (``faiss.knn``, the kernel of ``faiss.IndexFlatIP``)
run on the stored blocks themselves: no second copy of the vectors, float16 blocks converted to
float32 one bounded block at a time. Both paths are exact, so they return the same neighbours.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch

__all__ = ['topk_inner_product', 'ExactIndex', 'faiss_available', 'DEFAULT_FAISS_THRESHOLD']

# On an idle 2-core machine faiss's kernel searched 10^4-10^6 vectors 1.5-1.9x faster than the
# blocked torch search (scripts/bench_memory.py, docs/benchmarks.md); under heavy load it fell
# behind on small indexes, so it takes over only for large ones.
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
            best_scores, best_indices = _merge_topk(best_scores, best_indices, scores, indices, k)
        all_scores.append(best_scores)
        all_indices.append(best_indices)
    return torch.cat(all_scores), torch.cat(all_indices)


def _merge_topk(
        best_scores: Optional[torch.Tensor],
        best_indices: Optional[torch.Tensor],
        scores: torch.Tensor,
        indices: torch.Tensor,
        k: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Merge the running top-k with a block's top-k; either may hold fewer than k (small blocks)."""
    if best_scores is None:
        return scores, indices
    scores = torch.cat([best_scores, scores], dim=1)
    indices = torch.cat([best_indices, indices], dim=1)
    scores, order = scores.topk(min(k, scores.shape[1]), dim=1)
    return scores, indices.gather(1, order)


def _offsets(parts: Sequence[torch.Tensor]) -> List[int]:
    offsets, total = [], 0
    for part in parts:
        offsets.append(total)
        total += part.shape[0]
    return offsets


class ExactIndex:
    """A growable store of vectors with exact maximum-inner-product search.

    Vectors are kept in the chunks they were added in and searched as one (no concatenated copy);
    runs of small chunks are joined into blocks of at most ``max_block_elements`` on the next
    search, so that a memory added to batch by batch is not searched in thousands of tiny pieces.

    Args:
        dim: vector dimension.
        dtype: storage dtype, float32 or float16 (half the memory; scores are computed in float32).
        faiss_threshold: with faiss-cpu installed, search with faiss's exact kernel once the index
            holds at least this many vectors (on the stored blocks: no copy of the index; float16
            blocks are converted one bounded block at a time). ``None`` never uses faiss.
        max_block_elements: bound on the elements of a joined block and of a converted float16 block.
    """

    def __init__(
            self,
            dim: int,
            dtype: torch.dtype = torch.float32,
            faiss_threshold: Optional[int] = DEFAULT_FAISS_THRESHOLD,
            max_block_elements: int = _MAX_BLOCK_ELEMENTS,
    ):
        if dtype not in (torch.float32, torch.float16):
            raise ValueError(f'ExactIndex stores float32 or float16 vectors, got {dtype}.')
        self.dim = dim
        self.dtype = dtype
        self.faiss_threshold = faiss_threshold
        self._block_rows = max(1, max_block_elements // max(dim, 1))
        self._chunks: List[torch.Tensor] = []
        self._size = 0

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
        if vectors.shape[0]:
            self._chunks.append(vectors.detach().to('cpu', self.dtype).contiguous())
            self._size += vectors.shape[0]

    @property
    def uses_faiss(self) -> bool:
        return self.faiss_threshold is not None and self._size >= self.faiss_threshold and faiss_available()

    def _join_small_chunks(self) -> List[torch.Tensor]:
        """Join runs of adjacent small chunks into blocks of at most ``_block_rows`` rows, in place.

        The extra memory is one block at a time: the joined block replaces its pieces.
        """
        joined: List[torch.Tensor] = []
        run: List[torch.Tensor] = []
        run_rows = 0
        for chunk in self._chunks + [None]:
            if chunk is not None and run_rows + chunk.shape[0] <= self._block_rows:
                run.append(chunk)
                run_rows += chunk.shape[0]
                continue
            if run:
                joined.append(run[0] if len(run) == 1 else torch.cat(run))
            run, run_rows = ([chunk], chunk.shape[0]) if chunk is not None else ([], 0)
        self._chunks = joined
        return joined

    def search(self, queries: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(scores, indices) of the ``k`` stored vectors of largest inner product, best first."""
        if self._size == 0:
            raise ValueError('The index is empty; add vectors before searching.')
        if queries.dim() != 2 or queries.shape[1] != self.dim:
            raise ValueError(f'Expected (Q, {self.dim}) queries, got {tuple(queries.shape)}.')
        if k < 1:
            raise ValueError(f'k must be >= 1, got {k}.')
        queries = queries.detach().to('cpu', torch.float32).contiguous()
        chunks = self._join_small_chunks()
        if not self.uses_faiss:
            return topk_inner_product(queries, chunks, k)
        return self._faiss_search(queries, chunks, min(k, self._size))

    def _faiss_search(
            self, queries: torch.Tensor, chunks: Sequence[torch.Tensor], k: int,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        import faiss
        xq = queries.numpy()
        best_scores = best_indices = None
        for first, chunk in zip(_offsets(chunks), chunks):
            # float32 chunks are searched in place (faiss blocks them itself); float16 ones are
            # converted one block at a time, so the float32 copy never exceeds one block
            step = chunk.shape[0] if chunk.dtype == torch.float32 else self._block_rows
            for start in range(0, chunk.shape[0], step):
                block = chunk[start:start + step].float()
                scores, indices = faiss.knn(
                    xq, block.numpy(), min(k, block.shape[0]), metric=faiss.METRIC_INNER_PRODUCT)
                indices = torch.from_numpy(indices)
                indices += first + start
                best_scores, best_indices = _merge_topk(
                    best_scores, best_indices, torch.from_numpy(scores), indices, k)
        return best_scores, best_indices
