"""Fast paths against independent implementations: propagation, samplers, metrics, the published log.

    python -m pytest tests/test_perf.py

- propagation (precomputed CSR adjacency) == torch_geometric's LGConv stack, forward and gradient;
- sparse sampler: refinement densifies to exactly the dense W; draws follow W (chi-square);
- one-pass metrics == the published per-k evaluation (bench/baseline.py);
- the default run's first 3 epochs print exactly the published code's CPU log;
- the batch loops read nothing back from the device (ReFINe++: once per batch), with the written-out
  draw and the regulariser equal to torch.multinomial and torch.unique's, bit for bit.
"""
import re
import warnings

import pytest
import torch
import torch_geometric.nn
from scipy import stats

import checkpoint
import main
import metrics
import model as model_module
import sampler
from bench import host_syncs, synthetic
from bench.baseline import published_metrics
from model import LightGCN


def random_bipartite(num_users, num_items, num_edges, seed):
    """(2, E) user-item pairs with duplicates allowed, every user and item present."""
    generator = torch.Generator().manual_seed(seed)
    users = torch.cat([torch.arange(num_users), torch.randint(0, num_users, (num_edges,), generator=generator)])
    items = torch.cat([torch.randint(0, num_items, (num_users,), generator=generator),
                       torch.randint(0, num_items, (num_edges,), generator=generator)])
    items[:num_items] = torch.arange(num_items)[:min(num_items, users.numel())]
    return torch.stack([users, items])


@pytest.mark.parametrize("num_layers,dim", [(1, 8), (3, 16), (4, 64)])
def test_propagation_matches_lgconv_forward_and_gradient(num_layers, dim):
    num_users, num_items = 30, 40
    pairs = random_bipartite(num_users, num_items, 200, seed=num_layers)
    users, items = pairs[0], pairs[1] + num_users
    edge_index = torch.cat([torch.stack([users, items]), torch.stack([items, users])], dim=1)
    ours = LightGCN(num_users + num_items, dim, num_layers, edge_index)
    reference = torch_geometric.nn.LightGCN(num_users + num_items, dim, num_layers)
    reference.load_state_dict(ours.state_dict())
    upstream_out = reference.get_embedding(edge_index)
    our_out = ours.propagate_embeddings()
    assert torch.allclose(our_out, upstream_out, atol=1e-5)
    upstream_weight = torch.randn_like(upstream_out)  # a loss touching every output coordinate
    (upstream_out * upstream_weight).sum().backward()
    (our_out * upstream_weight).sum().backward()
    assert torch.allclose(ours.embedding.weight.grad, reference.embedding.weight.grad, atol=1e-5)
    assert ours.embedding.weight.grad.abs().sum() > 0


def make_samplers(num_users, num_items, train_pos, train_neg, real_neg_samp_prob, s, r, q, p):
    config = (num_users, num_items, train_pos, train_neg, real_neg_samp_prob, s, r, q, p)
    return sampler.DenseNegativeSampler(*config), sampler.SparseNegativeSampler(*config)


@pytest.mark.parametrize("seed", range(12))
def test_sparse_refinement_equals_dense_exactly(seed):
    generator = torch.Generator().manual_seed(seed)
    num_users, num_items = 7, 25
    train_pos = random_bipartite(num_users, num_items, 40, seed)
    # Negatives repeat pairs and overlap positives (the dense W writes them last, so they win).
    train_neg = torch.cat([train_pos[:, :5], torch.stack([torch.randint(0, num_users, (30,), generator=generator),
                                                          torch.randint(0, num_items, (30,), generator=generator)])], 1)
    train_neg = torch.cat([train_neg, train_neg[:, :6]], dim=1)
    # Odd seeds: integer embeddings, so similarity ties; some seeds write the value 1.
    item_emb = torch.randn(num_items, 6, generator=generator)
    if seed % 2:
        item_emb = torch.randint(-1, 2, (num_items, 6), generator=generator).float()
    real_neg, q, p = [(1.5, 0.75, 1.5), (1.5, 0.75, 2.0), (1.0, 0.5, 2.0), (2.0, 1.0, 1.0)][seed % 4]
    dense, sparse = make_samplers(num_users, num_items, train_pos, train_neg, real_neg, s=3, r=6, q=q, p=p)
    assert torch.equal(sparse.base().to_dense(), dense.base().to_dense())
    refined = dense.refine(item_emb).to_dense()
    assert torch.equal(sparse.refine(item_emb).to_dense(), refined)
    assert not torch.equal(refined, dense.base().to_dense()) or q == 1.0 == p


def chi_square_case():
    """3 users x 12 items whose refined W holds 0, 1, 1.5 (negatives), q = 0.75 and p = 2."""
    train_pos = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 1, 2, 2], [0, 1, 2, 3, 4, 5, 6, 2, 3, 8]])
    train_neg = torch.tensor([[0, 1, 1, 2], [9, 6, 7, 0]])
    item_emb = torch.randn(12, 4, generator=torch.Generator().manual_seed(3))
    dense, sparse = make_samplers(3, 12, train_pos, train_neg, 1.5, s=2, r=3, q=0.75, p=2.0)
    return dense.refine(item_emb), sparse.refine(item_emb)


def test_sparse_draws_follow_dense_weights():
    dense, sparse = chi_square_case()
    weights = dense.to_dense()
    assert {0.0, 1.0, 1.5, 0.75, 2.0} <= set(weights.flatten().tolist())
    torch.manual_seed(0)  # fixed: p-values over seeds were checked to be uniform
    draws = 60_000
    for user in range(3):
        counts = torch.bincount(sparse.draw(torch.full((draws,), user)), minlength=12).double()
        expected = weights[user].double() / weights[user].sum() * draws
        assert counts[expected == 0].sum() == 0  # train positives are never drawn
        drawable = expected > 0
        assert stats.chisquare(counts[drawable], expected[drawable]).pvalue > 1e-3
        # The test has power: ignoring the weights (uniform over drawable items) is rejected.
        uniform = drawable.double() / drawable.sum() * draws
        assert stats.chisquare(counts[drawable], uniform[drawable]).pvalue < 1e-6
        # And dense (torch.multinomial) draws are indistinguishable from sparse ones.
        dense_counts = torch.bincount(dense.draw(torch.full((draws,), user)), minlength=12).double()
        table = torch.stack([counts[drawable], dense_counts[drawable]]).numpy()
        assert stats.chi2_contingency(table).pvalue > 1e-3


def test_sparse_uniform_part_finds_every_free_item():
    """A user whose only exceptions are 0s draws uniformly among the others, edges included."""
    train_pos = torch.tensor([[0, 0, 0, 0, 0], [0, 3, 4, 5, 9]])
    weights = sampler.SparseNegativeSampler(1, 10, train_pos, torch.zeros(2, 0, dtype=torch.long), 1.5,
                                            s=1, r=1, q=0.75, p=1.5).base()
    torch.manual_seed(0)
    counts = torch.bincount(weights.draw(torch.zeros(20_000, dtype=torch.long)), minlength=10)
    assert counts[[0, 3, 4, 5, 9]].sum() == 0
    assert stats.chisquare(counts[[1, 2, 6, 7, 8]].double()).pvalue > 1e-3


def test_sparse_draw_rejects_a_row_without_weight():
    weights = sampler.SparseNegativeSampler(2, 2, torch.tensor([[0, 0, 1], [0, 1, 0]]),
                                            torch.zeros(2, 0, dtype=torch.long), 1.5, 1, 1, 0.75, 1.5).base()
    assert weights.draw(torch.tensor([1])).tolist() == [1]
    with pytest.raises(ValueError, match="all zero"):
        weights.draw(torch.tensor([0, 1]))


def test_auto_sampler_is_dense_only_for_small_matrices(monkeypatch):
    config = (torch.tensor([[0], [0]]), torch.zeros(2, 0, dtype=torch.long), 1.5, 1, 1, 0.75, 1.5)
    assert isinstance(sampler.build_negative_sampler("auto", 3, 4, *config), sampler.DenseNegativeSampler)
    monkeypatch.setattr(sampler, "AUTO_DENSE_MAX_ENTRIES", 11)
    assert isinstance(sampler.build_negative_sampler("auto", 3, 4, *config), sampler.SparseNegativeSampler)
    assert isinstance(sampler.build_negative_sampler("dense", 3, 4, *config), sampler.DenseNegativeSampler)


@pytest.mark.parametrize("seed", range(4))
def test_one_pass_metrics_equal_published_per_k_evaluation(seed):
    generator = torch.Generator().manual_seed(seed)
    num_users, num_items, batch = 50, 60, 16  # several user batches, a partial last one
    user_emb = torch.randn(num_users, 8, generator=generator)
    item_emb = torch.randn(num_items, 8, generator=generator)
    exclude = [random_bipartite(num_users, num_items, n, seed + n) for n in (150, 40, 40)]
    truth = torch.stack([torch.randint(0, num_users - 5, (200,), generator=generator),
                         torch.randint(0, num_items, (200,), generator=generator)])  # dupes; 5 users without
    ks = [1, 5, 10, 20]
    expected = published_metrics(user_emb, item_emb, exclude, truth, ks, test_batch_size=batch)
    topk = metrics.masked_topk(user_emb, item_emb, torch.cat(exclude, dim=1), max(ks), batch_size=batch)
    got = metrics.ranking_metrics(topk, truth, num_items, ks)
    assert torch.allclose(torch.tensor(got, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64),
                          rtol=1e-5, atol=1e-7)


def test_sparse_sampler_trains_on_synthetic_splits(tmp_path, monkeypatch, capsys):
    """main.py --sampler sparse with refinement from epoch 2, on a generated split."""
    synthetic.write_splits(synthetic.generate("ml-100k", scale=0.05, seed=1), tmp_path / "data", "tiny")
    monkeypatch.chdir(tmp_path)
    argv = ["--data_dir", str(tmp_path / "data"), "--dataset", "tiny", "--epochs", "3", "--t", "2", "--r", "4",
            "--top_k", "5", "--device", "cpu", "--sampler", "sparse"]
    assert main.main(argv) == 0
    printed = capsys.readouterr().out
    losses = [float(x) for x in re.findall(r"^Epoch: \d{3}, Loss: ([\d.]+)", printed, flags=re.M)]
    assert len(losses) == 3 and losses[2] < losses[0] < 0.7
    assert "Final Test Results" in printed


# --- No reads from the device in the batch loop (what would stall a GPU) ---------------------------

def test_host_read_counter_counts_what_would_wait_for_a_gpu():
    """The counter below sees each kind of read: otherwise a count of 0 would prove nothing."""
    x = torch.tensor([1.0, -2.0, 3.0])
    with host_syncs.HostReadCounter() as counter:
        torch.unique(x), x[x > 0], x.nonzero(), x.sum().item(), x.tolist(), float(x[0]), torch.multinomial(x.abs(), 1)
        x[x < 0] = 0.0
        with counter.paused():
            x.sum().item()
        x[1:], torch.sort(x), x[torch.tensor([0, 2])]  # slices, sorts and integer gathers read nothing
    assert counter.count == 8


@pytest.fixture(scope="module")
def toy_data():
    return host_syncs.toy_data("cpu")


@pytest.mark.parametrize("model_name,mode", host_syncs.CASES)
def test_epoch_reads_nothing_per_batch_but_refine_plus_sizes(model_name, mode, toy_data):
    """Counted on CPU tensors standing in for GPU ones: ReFINe and LightGCN read nothing back per
    batch, ReFINe++ once (the sizes of its batch's distinct negatives and autoencoder rows)."""
    per_batch, per_epoch = host_syncs.reads_per_batch(model_name, mode, toy_data, host_syncs.HostReadCounter)
    assert per_batch == (1 if model_name == "refine_plus" else 0)
    assert 0 < per_epoch <= 20  # the shuffle seed, the loss, W's check and refinement: once an epoch


@pytest.mark.parametrize("model_name,mode", [("refine", "dense"), ("refine_plus", "shared")])
def test_a_resumed_epoch_reads_no_more_per_batch_than_a_fresh_one(model_name, mode, toy_data):
    """The epoch after a save and resume (checkpoint.py's own functions, as --resume runs them)."""
    fresh = host_syncs.reads_per_batch(model_name, mode, toy_data, host_syncs.HostReadCounter)
    resumed = host_syncs.reads_per_batch(model_name, mode, toy_data, host_syncs.HostReadCounter, resume=True)
    assert resumed == fresh


def test_a_restored_adam_keeps_its_step_counters_on_the_cpu_and_moves_its_moments(tmp_path):
    """checkpoint.restore_model_and_optimizer on parameters of another device ("meta" stands in for a GPU
    here): the moments follow the parameters, Adam's step counters stay on the CPU, as torch keeps them
    (read from a GPU they would make each optimizer step wait: a host sync per batch)."""
    source = torch.nn.Linear(3, 4, bias=False)
    optimizer = torch.optim.Adam(source.parameters(), lr=0.01)
    source(torch.ones(2, 3)).sum().backward()
    optimizer.step()
    assert optimizer.state[source.weight]["step"].device.type == "cpu"  # torch's own choice, fresh
    path = tmp_path / "state.pt"
    checkpoint.save({"model": source.state_dict(), "optimizer": optimizer.state_dict()}, path)
    state = checkpoint._read(path, "a training state", "")
    assert all(tensor.device.type == "cpu" for tensor in state["optimizer"]["state"][0].values())
    target = torch.nn.Linear(3, 4, bias=False, device="meta")
    restored = torch.optim.Adam(target.parameters(), lr=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # copying weights into meta parameters is a no-op, and says so
        checkpoint.restore_model_and_optimizer(state, target, restored, path)
    assert {key: value.device.type for key, value in restored.state[target.weight].items()} == \
        {"step": "cpu", "exp_avg": "meta", "exp_avg_sq": "meta"}


@pytest.mark.parametrize("seed", range(6))
def test_draws_equal_torch_multinomial_and_its_random_stream(seed):
    """The written-out draw is torch.multinomial's, draw for draw on a CPU, and leaves the generator
    where torch.multinomial leaves it: one sample, and several without replacement."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.rand(9 + seed, 40 + 7 * seed, generator=generator)
    weights[weights < 0.3] = 0.0
    weights[:, :8] = 1.5
    users = torch.randint(0, weights.size(0), (25,), generator=generator)
    for draw, published in ((lambda: sampler.draw_negatives(weights, users),
                             lambda: torch.multinomial(weights[users], 1).squeeze(1)),
                            (lambda: sampler.exponential_race(weights[users], 6),
                             lambda: torch.multinomial(weights[users], 6, replacement=False))):
        torch.manual_seed(seed)
        expected, expected_next = published(), torch.rand(2)
        torch.manual_seed(seed)
        assert torch.equal(draw(), expected) and torch.equal(torch.rand(2), expected_next)


@pytest.mark.parametrize("dim", [16, 32, 64])
def test_regulariser_without_unique_equals_unique_bit_for_bit(dim):
    """The GPU's regulariser over padded distinct rows equals the one over torch.unique's rows (what a
    CPU computes, as published), value and gradient, bit for bit at these widths."""
    generator = torch.Generator().manual_seed(dim)
    weight = torch.randn(300, dim, generator=generator, requires_grad=True)
    for size in (1, 7, 250, 600):
        node_id = torch.randint(0, 300, (2, size), generator=generator)
        expected = weight[node_id.unique()].norm(p=2).pow(2)
        expected_grad, = torch.autograd.grad(expected * 0.3, weight)
        got = model_module.padded_distinct_rows(weight, node_id).norm(p=2).pow(2)
        got_grad, = torch.autograd.grad(got * 0.3, weight)
        assert torch.equal(got, expected) and torch.equal(got_grad, expected_grad)


def test_true_indices_equal_nonzero():
    generator = torch.Generator().manual_seed(0)
    for size in (0, 1, 17, 300):
        mask = torch.rand(size, generator=generator) < 0.3
        assert torch.equal(model_module.true_indices(mask, int(mask.sum())), mask.nonzero().squeeze(1))
