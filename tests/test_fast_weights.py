"""Fast weights against a step-by-step recurrence with an explicit fast-weight matrix A(t) in float64; layer
normalisation per example over units; the controls' initialisation; the generated associative-retrieval task read
back as strings; shapes, the release round trip and overfitting one batch."""
import pytest
import torch
import torch.nn.functional as F
from conftest import round_trip

import zoo
from zoo.models.fast_weights import AssociativeRetrievalDataModule, FastWeightsRNN, associative_retrieval, decode
from zoo.models.fast_weights.model import IRNN

pytestmark = pytest.mark.usefixtures("one_thread")


def explicit_fast_weights(cell: FastWeightsRNN, x: torch.Tensor) -> torch.Tensor:
    """The paper's equations as written: A(t) = λA(t−1) + ηh(t)h(t)ᵀ as a [B, R, R] matrix, h_0 = f(Wh + Cx),
    h_{s+1} = f(LN[Wh + Cx + A h_s]) with LN over the units of each example, S times; all states [B, T, R]."""
    B, T, _ = x.shape
    R = cell.W.shape[0]
    W, C, g, b, eps = cell.W, cell.C.weight, cell.ln.weight, cell.ln.bias, cell.ln.eps
    A = torch.zeros(B, R, R, dtype=x.dtype)
    h = torch.zeros(B, R, dtype=x.dtype)
    out = []
    for t in range(T):
        A = cell.decay * A + cell.fast_lr * h[:, :, None] * h[:, None, :]
        pre = torch.einsum("ij,bj->bi", W, h) + torch.einsum("ij,bj->bi", C, x[:, t])
        hs = pre.clamp(min=0)
        for _ in range(cell.inner_steps):
            z = pre + torch.einsum("bij,bj->bi", A, hs)
            mu, var = z.mean(1, keepdim=True), z.var(1, unbiased=False, keepdim=True)
            hs = ((z - mu) / torch.sqrt(var + eps) * g + b).clamp(min=0)
        h = hs
        out.append(h)
    return torch.stack(out, 1)


@pytest.mark.parametrize("inner_steps", [1, 3])
def test_fast_weights_equal_the_recurrence_with_an_explicit_matrix(inner_steps):
    torch.manual_seed(0)
    cell = FastWeightsRNN(5, 6, decay=0.9, fast_lr=0.7, inner_steps=inner_steps, w_scale=0.3).double()
    with torch.no_grad():
        cell.W.add_(0.2 * torch.randn(6, 6, dtype=torch.float64))
        cell.ln.weight.copy_(1 + 0.3 * torch.randn(6, dtype=torch.float64))
        cell.ln.bias.copy_(0.5 + 0.3 * torch.randn(6, dtype=torch.float64))  # keep most units on, so A acts
    x = torch.randn(4, 7, 5, dtype=torch.float64)
    want = explicit_fast_weights(cell, x)
    got = cell(x)
    assert got.shape == (4, 7, 6) and (want > 0).float().mean() > 0.5
    assert torch.allclose(got, want, atol=1e-12, rtol=0)
    # the fast term matters: with η = 0 the states differ
    cell.fast_lr = 0.0
    assert (cell(x) - want).abs().max() > 1e-3


def test_layer_norm_is_over_the_units_of_each_example():
    torch.manual_seed(1)
    cell = FastWeightsRNN(3, 8)
    x = torch.randn(5, 6, 3)
    alone = cell(x[:1])
    changed = x.clone()
    changed[1:] = 100 * torch.randn(4, 6, 3)  # other examples, wildly different
    assert torch.allclose(cell(x)[:1], alone, atol=1e-6)
    assert torch.allclose(cell(changed)[:1], alone, atol=1e-6)
    # before the ReLU each example's units have mean b̄ and spread set by the gain: with g = 1, b = 0 the
    # pre-activations of h_1 are standardised per example
    z = []
    cell.ln.register_forward_hook(lambda mod, args, out: z.append(out))
    cell(x * 10)
    z = torch.cat(z)
    assert torch.allclose(z.mean(1), torch.zeros(len(z)), atol=1e-5)
    assert torch.allclose(z.var(1, unbiased=False), torch.ones(len(z)), atol=1e-3)


def test_irnn_starts_from_the_identity_and_zero_biases():
    rnn = IRNN(4, 5).rnn
    assert torch.equal(rnn.weight_hh_l0, torch.eye(5))
    assert not rnn.bias_hh_l0.any() and not rnn.bias_ih_l0.any()
    cell = FastWeightsRNN(4, 5)
    assert torch.equal(cell.W, 0.05 * torch.eye(5)) and cell.C.bias is None


def test_generated_sequences_answer_the_value_paired_with_the_query():
    tokens, target = associative_retrieval(2000, 4, torch.Generator().manual_seed(0))
    assert tokens.shape == (2000, 11) and target.shape == (2000,)
    for seq, y in zip(tokens, target):
        s = decode(seq)
        keys, values = s[0:8:2], s[1:8:2]
        assert s[8:10] == "??" and keys.isalpha() and values.isdigit()
        assert len(set(keys)) == 4  # keys distinct within a sequence
        assert s[10] in keys and decode(y[None]) == values[keys.index(s[10])]
    # every key position and every digit is used
    assert set(target.tolist()) == set(range(26, 36))
    positions = torch.stack([(tokens[:, 0:8:2] == tokens[:, 10:11]).float().argmax(1) == k for k in range(4)])
    assert (positions.float().mean(1) > 0.2).all()


def test_data_module_splits_are_seeded_and_distinct():
    def splits(seed):
        dm = AssociativeRetrievalDataModule(train_size=300, val_size=50, test_size=80, batch_size=32, seed=seed)
        dm.setup()
        return dm

    a, b, c = splits(0), splits(0), splits(1)
    assert (len(a.train_set), len(a.val_set), len(a.test_set)) == (300, 50, 80)
    for split in ("train_set", "val_set", "test_set"):
        assert torch.equal(getattr(a, split).x, getattr(b, split).x)
        assert not torch.equal(getattr(a, split).x, getattr(c, split).x)
    assert not torch.equal(a.val_set.x, a.test_set.x[:50])
    x, y = next(iter(a.train_dataloader()))
    assert x.shape == (32, 11) and x.dtype == y.dtype == torch.long
    with pytest.raises(ValueError, match="num_pairs"):
        associative_retrieval(3, 27, torch.Generator())


@pytest.mark.parametrize("cell", ["fast_weights", "irnn", "lstm"])
def test_shapes_and_release_round_trip(cell, tmp_path):
    torch.manual_seed(0)
    module = zoo.create("fast_weights", cell=cell, hidden_size=7, embed_dim=6, readout_hidden=9)
    tokens, _ = associative_retrieval(5, 4, torch.Generator().manual_seed(0))
    assert module(tokens).shape == (5, 37)
    round_trip(module, tmp_path, tokens)


def test_unknown_cell_is_refused():
    with pytest.raises(ValueError, match="cell must be one of"):
        zoo.create("fast_weights", cell="gru")


def test_fast_weights_fit_one_batch():
    torch.manual_seed(0)
    module = zoo.create("fast_weights", hidden_size=20, embed_dim=16, readout_hidden=32)
    tokens, y = associative_retrieval(32, 4, torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    first = F.cross_entropy(module(tokens), y).item()
    for _ in range(60):
        loss = F.cross_entropy(module(tokens), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first
    assert (module(tokens).argmax(1) == y).all()


def test_recall_scores_rebuild_the_fast_weight_term_at_the_query():
    torch.manual_seed(2)
    cell = FastWeightsRNN(5, 6, decay=0.9, fast_lr=0.7, w_scale=0.3).double()
    x = torch.randn(3, 7, 5, dtype=torch.float64)
    states = cell(x)
    A = torch.zeros(3, 6, 6, dtype=torch.float64)
    for t in range(6):  # A(t) after h(1..6), the states before the query
        A = cell.decay * A + cell.fast_lr * states[:, t, :, None] * states[:, t, None, :]
    h0 = (states[:, -2] @ cell.W.T + cell.C(x[:, -1])).clamp(min=0)
    s = cell.recall(x)
    assert s.shape == (3, 6)
    assert torch.allclose(torch.einsum("btr,bt->br", states[:, :-1], s), torch.einsum("bij,bj->bi", A, h0),
                          atol=1e-12, rtol=0)


def test_release_figure_shows_the_recall_of_fast_weights_only(tmp_path):
    dm = AssociativeRetrievalDataModule(train_size=8, val_size=8, test_size=16, batch_size=4)
    fw = zoo.create("fast_weights", hidden_size=7, embed_dim=6, readout_hidden=9)
    figs = fw.release_figures(tmp_path, dm)
    assert list(figs) == ["fast_weights_recall.png"] and figs["fast_weights_recall.png"].stat().st_size > 5000
    assert zoo.create("fast_weights", cell="lstm", hidden_size=7).release_figures(tmp_path, dm) == {}
