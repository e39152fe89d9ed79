"""ReFINe++ loss terms against a hand computation, and each --model training on synthetic data."""
import math
import re

import numpy as np
import pytest
import torch

import main
import sampler
import splits
import training
from helpers import ORACLE_DIR, write_synthetic_dataset
from model import ReFINePlus, multi_negative_ranking_loss


def test_ranking_loss_by_hand():
    # positive 0: log(1 + e^(0.5-1) + e^(2-1)); positive 1: log(1 + e^(-1-0) + e^(0-0))
    pos = torch.tensor([1.0, 0.0])
    neg = torch.tensor([[0.5, 2.0], [-1.0, 0.0]])
    expected = (math.log(1 + math.exp(-0.5) + math.exp(1)) + math.log(1 + math.exp(-1) + 1)) / 2
    assert multi_negative_ranking_loss(pos, neg).item() == pytest.approx(expected, rel=1e-6)
    # No overflow where exp() would: log(1 + e^200) = 200.
    assert multi_negative_ranking_loss(torch.tensor([0.0]), torch.tensor([[200.0]])).item() == pytest.approx(200.0)


def test_total_loss_equals_term_by_term_numpy():
    torch.manual_seed(0)
    num_users, num_items = 3, 4
    edges = torch.tensor([[0, 1, 2, 0], [3, 4, 5, 6]])  # user -> item node (items offset by 3)
    edge_index = torch.cat([edges, edges.flip(0)], dim=1)
    model = ReFINePlus(num_users, num_items, embedding_dim=2, num_layers=1, edge_index=edge_index, hidden_dim=3)
    pos_users, pos_items = torch.tensor([0, 2]), torch.tensor([0, 2])
    neg_items = torch.tensor([[1, 3], [1, 3]])
    neg_edges = torch.tensor([[1], [1]])  # user 1 dislikes item 1
    loss = model.loss(pos_users, pos_items, neg_items, neg_edges).item()

    with torch.no_grad():
        out = model.propagate_embeddings().double().numpy()
        x0 = model.gcn.embedding.weight.double().numpy()
    users, items = out[:num_users], out[num_users:]
    ranking = np.mean([np.log(1 + sum(np.exp(users[u] @ items[j] - users[u] @ items[i]) for j in neg_items[n].tolist()))
                       for n, (u, i) in enumerate(zip(pos_users.tolist(), pos_items.tolist()))])
    ranking += 1e-7 / 2 * (x0 ** 2).sum()

    def run_ae(ae, x):
        layers = [(m.weight.detach().double().numpy(), m.bias.detach().double().numpy())
                  for m in ae.modules() if isinstance(m, torch.nn.Linear)]
        relu = lambda v: np.maximum(v, 0)  # noqa: E731
        h = relu(x @ layers[0][0].T + layers[0][1])
        z = h @ layers[1][0].T + layers[1][1]  # the latent code has no activation (published)
        h = relu(z @ layers[2][0].T + layers[2][1])
        recon = 1 / (1 + np.exp(-(h @ layers[3][0].T + layers[3][1])))
        reg = sum((w ** 2).sum() + (b ** 2).sum() for w, b in layers)
        return recon, z, reg

    dislikes = np.zeros((num_users, num_items))
    dislikes[1, 1] = 1
    bce = lambda p, y: -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()  # noqa: E731
    user_recon, user_z, user_reg = run_ae(model.user_ae, dislikes)
    item_recon, item_z, item_reg = run_ae(model.item_ae, dislikes.T)
    autoencoder = bce(user_recon, dislikes) + bce(item_recon, dislikes.T) + 1e-5 / 2 * (user_reg + item_reg)
    alignment = ((users - user_z) ** 2).mean() + ((items - item_z) ** 2).mean()
    assert loss == pytest.approx(ranking + autoencoder + alignment, rel=1e-5)


def test_refine_plus_encodes_negatives_and_builds_unsigned_graph(tmp_path):
    folder = tmp_path / "T"
    folder.mkdir()
    header = "user_id:token,item_id:token,rating:float\n"
    # Item 9 occurs only as a confirmed negative: ReFINe drops it, ReFINe++ keeps it.
    (folder / "T_train_augment.csv").write_text(header + "1,5,4\n2,7,5\n1,9,0.5\n2,5,3\n")
    (folder / "T_validation.csv").write_text(header + "2,5,4\n")
    (folder / "T_test.csv").write_text(header + "1,7,4\n")
    with pytest.raises(Exception, match="item id 9"):
        splits.load_splits(tmp_path, "T")
    data = splits.load_splits(tmp_path, "T", encode_negatives=True)
    assert data.item_ids.tolist() == [5, 7, 9]
    assert data.graph_edges.tolist() == [[0, 1, 0], [0, 1, 2]]
    assert data.graph_ratings.tolist() == [4, 5, 0.5]
    assert data.train_pos.tolist() == [[0, 1], [0, 1]]


@pytest.mark.parametrize("model_name", ["refine", "refine_plus", "lightgcn"])
def test_each_model_trains_with_falling_loss(model_name, tmp_path, monkeypatch, capsys):
    write_synthetic_dataset(tmp_path / "data", "TOY", num_users=40, num_items=60)
    monkeypatch.chdir(tmp_path)
    code = main.main(["--data_dir", str(tmp_path / "data"), "--dataset", "TOY", "--model", model_name, "--device", "cpu",
                      "--epochs", "10", "--batch_size", "64", "--top_k", "5", "10", "--r", "5", "--t", "4",
                      "--embedding_dim", "16", "--layers", "2", "--learning_rate", "0.01"])
    out = capsys.readouterr().out
    assert code == 0
    losses = [float(loss) for loss in re.findall(r"Epoch: \d+, Loss: (\d+\.\d+)", out)]
    assert len(losses) == 10 and losses[-1] < losses[0]
    assert "Final Test Results" in out
    header_keys = re.findall(r"^(\w+): ", out.split("data loading")[0], flags=re.M)
    assert ("r" in header_keys) == (model_name != "refine_plus")  # ReFINe++'s header has no p..t
    assert f"model: {model_name}" in out


def test_shared_negatives_quirk_and_per_positive_fix(monkeypatch):
    """Published ReFINe++ gives every positive the negatives of the batch's second positive."""
    seen = []

    def record_loss(self, pos_users, pos_items, neg_items, neg_edges):
        seen.append((pos_users.clone(), neg_items.clone()))
        return self.gcn.embedding.weight.sum() * 0

    monkeypatch.setattr(ReFINePlus, "loss", record_loss)
    data = splits.RecData(
        num_users=3, num_items=20, train_pos=torch.tensor([[0, 1, 2], [0, 1, 2]]),
        graph_edges=torch.tensor([[0, 1, 2], [0, 1, 2]]), graph_ratings=torch.tensor([5.0, 4.0, 4.0]),
        train_neg=torch.zeros(2, 0, dtype=torch.long), train_neutral=torch.zeros(2, 0, dtype=torch.long),
        valid=torch.zeros(2, 0, dtype=torch.long), test=torch.zeros(2, 0, dtype=torch.long),
        user_ids=np.arange(3), item_ids=np.arange(20))
    for mode in ("shared", "shared_fast", "per_positive"):
        config = training.TrainConfig(model="refine_plus", refine_plus_negatives=mode)
        model, weights, train_epoch = training.build_model(config, data)
        optimizer = torch.optim.Adam(model.parameters())
        torch.manual_seed(0)
        train_epoch(model, optimizer, data, weights, 1, config)
    (shared_users, shared), (fast_users, fast), (users, per_positive) = seen
    assert shared.shape == fast.shape == per_positive.shape == (3, 2)  # 20 // 10 negatives per positive
    for users_seen, draw in ((shared_users, shared), (fast_users, fast)):
        assert all(torch.equal(row, draw[1]) for row in draw)
        assert users_seen[1].item() not in draw[1].tolist()  # drawn from the second positive's row of W
    assert not all(torch.equal(row, per_positive[0]) for row in per_positive)
    # Without replacement, never a graph item of that user.
    for row, user in zip(per_positive, users.tolist()):
        assert len(set(row.tolist())) == 2 and user not in row.tolist()  # user u's graph item is item u


def test_shared_draw_consumes_the_published_random_stream():
    """shared = one multinomial over all positives' rows, row 1 kept: the published call, draw for draw."""
    weights = torch.rand(6, 30)
    pos_users = torch.tensor([4, 0, 2, 2, 5])
    torch.manual_seed(3)
    published = torch.multinomial(weights[pos_users], 3, replacement=False)[1]
    after_published = torch.rand(1)
    torch.manual_seed(3)
    ours = sampler.refine_plus_negatives(weights, pos_users, 3, "shared")
    assert torch.equal(ours, published.expand(5, -1)) and torch.equal(torch.rand(1), after_published)


def exact_pair_probabilities(w):
    """P({a, b}) of two draws without replacement, each proportional to the remaining weights."""
    total = w.sum()
    return {(a, b): w[a] / total * w[b] / (total - w[a]) + w[b] / total * w[a] / (total - w[b])
            for a in range(len(w)) for b in range(a + 1, len(w))}


@pytest.mark.parametrize("mode", ["shared", "shared_fast"])
def test_shared_draws_have_the_published_distribution(mode):
    """Chi-square goodness of fit of the drawn negative pairs against the exact probabilities of
    drawing 2 of 6 items without replacement from W[u] = (0, 1, 1.5, 1, 0.5, 1.5); and the
    alternative (a uniform draw over the non-zero items) is rejected, so the test has power."""
    from scipy import stats

    weights = torch.tensor([[1.0, 1, 1, 1, 1, 1], [0, 1, 1.5, 1, 0.5, 1.5]])
    pos_users = torch.tensor([0, 1, 0])  # the second positive is user 1
    torch.manual_seed(7)
    draws = [tuple(sorted(sampler.refine_plus_negatives(weights, pos_users, 2, mode)[0].tolist()))
             for _ in range(6000)]
    exact = exact_pair_probabilities(weights[1].double().numpy())
    pairs = [pair for pair, prob in exact.items() if prob > 0]
    assert set(draws) <= set(pairs)  # item 0 (weight 0) is never drawn
    observed = [draws.count(pair) for pair in pairs]
    assert stats.chisquare(observed, [exact[pair] * len(draws) for pair in pairs]).pvalue > 1e-3
    uniform = exact_pair_probabilities(np.array([0, 1, 1, 1, 1, 1.0]))
    assert stats.chisquare(observed, [uniform[pair] * len(draws) for pair in pairs]).pvalue < 1e-6


def test_initialisation_follows_the_published_order():
    """Parameters equal those of the published creation and initialisation order, built here from
    plain torch modules, and the generator ends in the same state (docs/method.md §6)."""
    num_users, num_items, dim, hidden = 5, 7, 4, 6
    torch.manual_seed(11)
    embedding = torch.nn.Embedding(num_users + num_items, dim)
    linears = [torch.nn.Linear(a, b) for a, b in ((num_items, hidden), (hidden, dim), (dim, hidden), (hidden, num_items),
                                                  (num_users, hidden), (hidden, dim), (dim, hidden), (hidden, num_users))]
    torch.nn.init.xavier_uniform_(embedding.weight)
    for linear in linears:
        torch.nn.init.xavier_uniform_(linear.weight)
    next_draw = torch.rand(3)

    torch.manual_seed(11)
    edges = torch.tensor([[0, 1], [num_users, num_users + 1]])
    model = ReFINePlus(num_users, num_items, dim, 1, torch.cat([edges, edges.flip(0)], 1), hidden_dim=hidden)
    assert torch.equal(torch.rand(3), next_draw)
    assert torch.equal(model.gcn.embedding.weight, embedding.weight)
    ours = model.user_ae.linears() + model.item_ae.linears()
    for mine, published in zip(ours, linears):
        assert torch.equal(mine.weight, published.weight) and torch.equal(mine.bias, published.bias)
    # The encoder ends with its Linear: the latent code has no activation.
    assert isinstance(model.user_ae.encoder[-1], torch.nn.Linear)


@pytest.mark.slow
def test_ml100k_matches_published_refine_plus_code_on_cpu(ml100k_splits, tmp_path, monkeypatch, capsys):
    """Two epochs of the default ReFINe++ run on the published splits: the statistics lines and every
    epoch block equal the published ReFINe++ code's own CPU log (same random stream, draw for draw)."""
    monkeypatch.chdir(tmp_path)
    code = main.main(["--data_dir", str(ml100k_splits), "--model", "refine_plus", "--epochs", "2", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    on_cpu = (ORACLE_DIR / "ReFINe_plus_ML-100K.published-code-on-cpu.out").read_text()
    stats = "user: 938,  item: 1008\ntrain interations: 65841\nvalid interations: 5018\ntest interations: 10514\n"
    assert stats in on_cpu and stats in out
    for epoch in (1, 2):
        pattern = rf"\nEpoch: {epoch:03d}, Loss: .+\n(?:.+\n){{4}}"
        assert re.search(pattern, out).group(0) == re.search(pattern, on_cpu).group(0)


def test_autoencoder_shortcut_equals_every_row():
    """bce_and_codes computes all-zero rows once; values and gradients equal the full forward."""
    from model import DispreferenceAutoencoder

    torch.manual_seed(1)
    ae = DispreferenceAutoencoder(num_inputs=12, hidden_dim=7, latent_dim=3)
    x = torch.zeros(9, 12)
    x[2, 5] = x[2, 7] = x[6, 0] = 1.0
    align_target = torch.randn(9, 3)

    bce, codes = ae.bce_and_codes(x)
    (bce + ((codes - align_target) ** 2).mean()).backward()
    shortcut_grads = [p.grad.clone() for p in ae.parameters()]
    ae.zero_grad()

    recon, latent = ae(x)
    full_bce = torch.nn.functional.binary_cross_entropy(recon, x)
    (full_bce + ((latent - align_target) ** 2).mean()).backward()
    assert torch.allclose(bce, full_bce, atol=1e-6) and torch.allclose(codes, latent, atol=1e-6)
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(shortcut_grads, ae.parameters()))
