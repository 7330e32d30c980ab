"""The batched two-component EM (benchmark/gmm.py) against scikit-learn, and its grouping."""
import numpy as np
import pytest
import torch

from benchmark import gmm

from helpers import bimodal_scores


def entry_partition(mixtures, scores, labels):
    """0 / 1 / 2 = at most the low mean / up to the high mean / above it, as MIRACL splits."""
    means = mixtures.means.view(scores.shape[1], 2, 2)
    lo = torch.where(labels == 1, means[:, 1, 0], means[:, 0, 0])
    hi = torch.where(labels == 1, means[:, 1, 1], means[:, 0, 1])
    return (scores > lo).long() + (scores > hi).long()


@pytest.mark.parametrize("seed", [0, 1])
def test_batched_em_and_sklearn_give_the_same_partition_on_at_least_99_percent_of_entries(seed):
    scores, labels = bimodal_scores(6000, 10, seed)
    x, mask = gmm.by_label_and_class(scores, labels)
    ours, ref = gmm.fit(x, mask, "torch"), gmm.fit(x, mask, "sklearn", random_state=42)
    agree = (entry_partition(ours, scores, labels) == entry_partition(ref, scores, labels)).double().mean()
    assert agree >= 0.99
    torch.testing.assert_close(ours.means, ref.means, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.weights, ref.weights, atol=1e-4, rtol=0)


def test_well_separated_components_are_recovered_sorted_by_mean():
    g = torch.Generator().manual_seed(0)
    a = torch.cat([0.2 + 0.02 * torch.randn(700, generator=g), 0.8 + 0.05 * torch.randn(300, generator=g)])
    x = torch.stack([a, 1 - a]).double()  # the second row has the components swapped
    mix = gmm.fit(x, torch.ones_like(x, dtype=torch.bool), "torch")
    torch.testing.assert_close(mix.means, torch.tensor([[0.2, 0.8], [0.2, 0.8]], dtype=torch.float64), atol=0.01, rtol=0)
    torch.testing.assert_close(mix.weights, torch.tensor([[0.7, 0.3], [0.3, 0.7]], dtype=torch.float64), atol=0.01, rtol=0)
    torch.testing.assert_close(mix.variances.sqrt(), torch.tensor([[0.02, 0.05], [0.05, 0.02]], dtype=torch.float64),
                               atol=0.005, rtol=0)
    post = mix.posterior(x)
    torch.testing.assert_close(post.sum(-1), torch.ones_like(x))
    assert (post[0, :700, 0] > 0.99).all() and (post[1, :700, 1] > 0.99).all()


def test_masked_values_do_not_count_and_mixtures_of_fewer_than_two_values_are_invalid():
    x = torch.tensor([[0.1, 0.12, 0.9, 0.92, 5.0], [0.3, 0.0, 0.0, 0.0, 0.0], [0.0] * 5], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 0, 0, 0, 0], [0] * 5], dtype=torch.bool)
    for backend in gmm.BACKENDS:
        mix = gmm.fit(x, mask, backend)
        assert mix.valid.tolist() == [True, False, False]
        torch.testing.assert_close(mix.means[0], torch.tensor([0.11, 0.91], dtype=torch.float64), atol=1e-6, rtol=0)


def test_identical_values_give_sklearns_empty_component_and_no_nan():
    x = torch.full((1, 50), 0.4, dtype=torch.float64)
    ones = torch.ones_like(x, dtype=torch.bool)
    ours, ref = gmm.fit(x, ones, "torch"), gmm.fit(x, ones, "sklearn")
    for field in ("weights", "means", "variances"):  # one empty component at mean 0, weight ~0
        torch.testing.assert_close(getattr(ours, field), getattr(ref, field))
    assert torch.isfinite(ours.weights).all()


def discrete_scores(n, c, seed):
    """Scores like MIRACL's: a mix of a run-length term and a rank, so many ties and several modes."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randint(0, 7, (n, c), generator=g).double()
    r = torch.randint(1, c + 1, (n, c), generator=g).double()
    return 0.5 * d / 6 + 0.5 * (r - 1) / (c - 1), (torch.rand(n, c, generator=g) < 0.2).long()


@pytest.mark.parametrize("data", ["bimodal", "discrete"])
def test_the_k_means_start_replays_sklearns_kmeans_labels(data):
    from sklearn.cluster import KMeans

    scores, labels = bimodal_scores(2000, 6, 0) if data == "bimodal" else discrete_scores(2000, 6, 0)
    x, mask = gmm.by_label_and_class(scores, labels)
    high = gmm._kmeans_high(x, mask, 42).bool()
    for row in range(len(x)):
        values = x[row][mask[row]].numpy()[:, None]
        ref = KMeans(2, n_init=1, random_state=np.random.RandomState(42)).fit(values).labels_  # as GaussianMixture calls it
        np.testing.assert_array_equal(high[row][mask[row]].numpy(), ref.astype(bool))


def test_discrete_scores_give_the_same_partition_as_sklearn_with_the_same_random_state():
    scores, labels = discrete_scores(3000, 8, 1)
    x, mask = gmm.by_label_and_class(scores, labels)
    ours, ref = gmm.fit(x, mask, "torch"), gmm.fit(x, mask, "sklearn", random_state=42)
    agree = (entry_partition(ours, scores, labels) == entry_partition(ref, scores, labels)).double().mean()
    assert agree >= 0.99
    torch.testing.assert_close(ours.means, ref.means, atol=1e-4, rtol=0)


def test_groups_are_label_major_with_the_observed_class_as_mask():
    scores = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], dtype=torch.float64)
    labels = torch.tensor([[1, 0], [0, 0], [1, 1]])
    x, mask = gmm.by_label_and_class(scores, labels)
    assert x.tolist() == [[0.1, 0.3, 0.5]] * 2 + [[0.2, 0.4, 0.6]] * 2
    assert mask.tolist() == [[False, True, False], [True, False, True], [True, True, False], [False, False, True]]


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="gmm backend must be one of"):
        gmm.fit(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), "numpy")


# --- rank-only scores: a value exactly at the midpoint of the two centres -------------------------

def rank_only_mixtures(m, seed, n_max=256):
    """m groups of rank-only scores k / (L - 1) (L = 3..25 values, uneven shares, some divided by
    1 + 1e-9 as N(.) leaves them), each kept only if a value lies exactly, in exact arithmetic, at the
    midpoint of its two k-means++ centres, so the first Lloyd assignment ties. At most 256 values a
    group: sklearn then sums each cluster in one OpenMP thread whatever its thread count."""
    rng = np.random.default_rng(seed)
    x, mask, kept = np.zeros((m, n_max)), np.zeros((m, n_max), dtype=bool), 0
    while kept < m:
        L, n = int(rng.integers(3, 26)), int(rng.integers(8, n_max + 1))
        k = rng.choice(L, size=n, p=rng.dirichlet(np.full(L, rng.choice([0.3, 1.0, 3.0]))))
        v = k / (L - 1) / (1 + 1e-9 * rng.integers(0, 2))
        group = v[:, None] - v[:, None].mean(axis=0)
        centres = gmm._kmeans_plusplus(group, np.random.RandomState(42))
        ka, kb = (int(k[np.argmin(np.abs(group[:, 0] - c))]) for c in centres)  # the centres' grid steps
        if ka != kb and (ka + kb) % 2 == 0 and (ka + kb) // 2 in k:
            x[kept, :n], mask[kept, :n] = v, True
            kept += 1
    return torch.from_numpy(x), torch.from_numpy(mask)


def test_rank_only_scores_with_midpoint_ties_give_sklearns_fit_to_1e_6():
    from sklearn.cluster import KMeans

    x, mask = rank_only_mixtures(80, 0)
    ours, ref = gmm.fit(x, mask, "torch"), gmm.fit(x, mask, "sklearn", random_state=42)
    for field in ("weights", "means", "variances"):
        torch.testing.assert_close(getattr(ours, field), getattr(ref, field), atol=1e-6, rtol=0)
    posterior = (ours.posterior(x) - ref.posterior(x)).abs().amax(-1)
    assert float(posterior[mask].max()) < 1e-6
    assert torch.equal(ours.iterations, ref.iterations)
    high = gmm._kmeans_high(x, mask, 42).bool()
    for row in range(0, len(x), 4):  # the start itself, on a quarter of them (KMeans costs a few ms a fit)
        values = x[row][mask[row]].numpy()[:, None]
        ref_labels = KMeans(2, n_init=1, random_state=np.random.RandomState(42)).fit(values).labels_
        np.testing.assert_array_equal(high[row][mask[row]].numpy(), ref_labels.astype(bool))


def thread_dependent_group():
    """380 values 0, 1/3, 2/3, 1 (253, 27, 73, 27 of them, shuffled): after the first Lloyd step the
    upper cluster's mean is 2/3 in exact arithmetic, so every 1/3 lies exactly at the midpoint of
    the centres and the rounding of the cluster sums decides where it goes."""
    rng = np.random.default_rng(345)
    a, b, c = int(rng.integers(150, 500)), int(rng.integers(5, 40)), int(rng.integers(50, 300))
    return rng.permutation(np.repeat(np.arange(4) / 3, [a, b, c, b]))


@pytest.mark.parametrize("shape", [(1, 1), (1000, 1), (9000, 1), (1000, 2), (9000, 7), (300, 50)])
def test_sequential_sums_add_the_rows_one_after_the_other(shape):
    a = np.random.default_rng(0).normal(size=shape) * 10.0 ** np.random.default_rng(1).integers(-8, 8, size=shape)
    expected = np.zeros(shape[1])
    for row in a:  # the order sklearn's Lloyd threads add their values in
        expected = expected + row
    np.testing.assert_array_equal(gmm._sequential_sum(a), expected)


def test_the_documented_boundary_sklearns_lloyd_sums_depend_on_its_openmp_threads():
    from sklearn.cluster import KMeans
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
    from threadpoolctl import threadpool_limits

    values = thread_dependent_group()
    ours = gmm._kmeans_high(torch.from_numpy(values)[None], torch.ones(1, len(values), dtype=torch.bool), 42)[0]
    kmeans = lambda: KMeans(2, n_init=1, random_state=np.random.RandomState(42)).fit(values[:, None]).labels_  # noqa: E731
    with threadpool_limits(1, user_api="openmp"):
        one_thread = kmeans()
    np.testing.assert_array_equal(ours.numpy(), one_thread)  # ours = sklearn with one thread
    if _openmp_effective_n_threads() >= 2:  # two chunks of 256, two partial sums: the tie goes the other way
        several = kmeans()
        assert (several != one_thread).sum() == 27 and ours.sum() == 100 and several.sum() == 127
