"""k-means against brute force, balanced capacities, RQ-KMeans residual bookkeeping."""
import jax
import numpy as np

from sidjax.sid.kmeans import assign, balanced_assign, kmeans, rq_kmeans, sq_distances


def _blobs(seed=0, k=4, per=30, dim=3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 10
    labels = np.repeat(np.arange(k), per)
    return (centres[labels] + rng.normal(size=(k * per, dim)) * 0.1).astype(np.float32), labels


def test_assignment_matches_brute_force():
    rng = np.random.default_rng(1)
    x, c = rng.normal(size=(50, 4)).astype(np.float32), rng.normal(size=(7, 4)).astype(np.float32)
    brute = ((x[:, None] - c[None]) ** 2).sum(-1)
    np.testing.assert_allclose(np.asarray(sq_distances(x, c)), brute, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(assign(x, c)), brute.argmin(1))


def test_kmeans_recovers_blobs_and_is_deterministic():
    x, labels = _blobs()
    for init in ("kmeans++", "random"):
        centres, got = kmeans(x, jax.random.key(0), k=4, iters=20, init=init)
        got = np.asarray(got)
        if init == "kmeans++":  # k-means++ seeds one centre per well-separated blob
            for blob in range(4):
                assert len(set(got[labels == blob].tolist())) == 1
            assert len(set(got.tolist())) == 4
        again = np.asarray(kmeans(x, jax.random.key(0), k=4, iters=20, init=init)[1])
        np.testing.assert_array_equal(got, again)
        np.testing.assert_allclose(np.asarray(centres)[got], x, atol=1.0)


def test_balanced_assignment_respects_capacity():
    rng = np.random.default_rng(2)
    dist = rng.random((23, 5)).astype(np.float32)
    dist[:, 0] -= 1.0  # everyone prefers centre 0
    chosen = np.asarray(balanced_assign(dist, capacity=5))
    assert np.bincount(chosen, minlength=5).max() <= 5
    x = rng.normal(size=(101, 2)).astype(np.float32)
    _, got = kmeans(x, jax.random.key(3), k=10, iters=5, balanced=True, balanced_iters=2)
    assert np.bincount(np.asarray(got), minlength=10).max() <= 11


def test_rq_kmeans_residuals_add_up():
    x, _ = _blobs(seed=4, k=6, per=10)
    r = rq_kmeans(x, levels=3, k=4, seed=0, iters=10)
    assert r.codes.shape == (60, 3) and r.codes.min() >= 0 and r.codes.max() < 4
    np.testing.assert_allclose(r.residuals[0], x)
    for level in range(2):  # each level quantizes what the previous one left
        chosen = r.codebooks[level][r.codes[:, level]]
        np.testing.assert_allclose(r.residuals[level + 1], r.residuals[level] - chosen, atol=1e-5)
    np.testing.assert_array_equal(rq_kmeans(x, levels=3, k=4, seed=0, iters=10).codes, r.codes)
