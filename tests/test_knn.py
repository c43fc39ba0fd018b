"""Exact search of timm_u1.core.knn against a brute-force reference, for every chunk layout and path."""
import pytest
import torch
import torch.nn.functional as F

from timm_u1.core.knn import ExactIndex, faiss_available, topk_inner_product

PATHS = ['torch'] + (['faiss'] if faiss_available() else [])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def brute_force(queries: torch.Tensor, vectors: torch.Tensor, k: int):
    return (queries.float() @ vectors.float().T).topk(min(k, vectors.shape[0]), dim=1)


def make_index(path: str, dim: int, dtype: torch.dtype = torch.float32) -> ExactIndex:
    return ExactIndex(dim, dtype, faiss_threshold=0 if path == 'faiss' else None)


@pytest.mark.parametrize('path', PATHS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('chunks', [(2, 2, 10), (1, 1, 1, 1, 1, 9), (3,), (4, 1), (7, 0, 7)])
def test_search_over_chunks_smaller_than_k_equals_brute_force(path, dtype, chunks):
    # issue 12 item 10: the first chunks holding fewer than k vectors crashed the merge
    dim, k = 8, 5
    vectors = F.normalize(torch.randn(sum(chunks), dim, generator=gen(0)), dim=1).to(dtype)
    queries = F.normalize(torch.randn(6, dim, generator=gen(1)), dim=1)
    index = make_index(path, dim, dtype)
    start = 0
    for n in chunks:
        index.add(vectors[start:start + n])
        start += n
    assert index.uses_faiss == (path == 'faiss')
    scores, idx = index.search(queries, k)
    ref_scores, ref_idx = brute_force(queries, vectors, k)
    assert idx.dtype == torch.int64 and idx.shape == ref_idx.shape
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(scores, ref_scores, rtol=1e-5, atol=1e-5)


def test_blocked_merge_with_blocks_smaller_than_k():
    keys = torch.randn(40, 4, generator=gen(2))
    queries = torch.randn(3, 4, generator=gen(3))
    parts = [keys[:2], keys[2:4], keys[4:]]
    scores, idx = topk_inner_product(queries, parts, k=5)
    ref_scores, ref_idx = brute_force(queries, keys, 5)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(scores, ref_scores)


@pytest.mark.parametrize('path', PATHS)
def test_growing_after_a_search_and_many_small_chunks(path):
    dim = 16
    vectors = F.normalize(torch.randn(3000, dim, generator=gen(4)), dim=1)
    queries = F.normalize(torch.randn(20, dim, generator=gen(5)), dim=1)
    index = make_index(path, dim)
    for start in range(0, 1000, 7):  # many small chunks, as a memory built batch by batch adds them
        index.add(vectors[start:min(start + 7, 1000)])
    _, idx = index.search(queries, 10)
    assert torch.equal(idx, brute_force(queries, vectors[:1000], 10)[1])
    index.add(vectors[1000:])
    assert len(index) == 3000
    _, idx = index.search(queries, 10)
    assert torch.equal(idx, brute_force(queries, vectors, 10)[1])
    # the stored vectors are the added ones, in order, whatever the chunking
    assert torch.equal(index.vectors, vectors)


@pytest.mark.skipif(not faiss_available(), reason='faiss-cpu is not installed')
def test_float16_store_uses_the_fast_path():
    index = ExactIndex(8, torch.float16, faiss_threshold=0)
    index.add(torch.randn(50, 8, generator=gen(6)))
    assert index.uses_faiss
