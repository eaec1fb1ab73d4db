"""The Imputer (arXiv 2002.08926): the dynamic-programming loss and the Viterbi alignment against enumeration of every
alignment, the masks, block decoding's constant number of passes, the imitation loss by hand, learning a tiny batch,
an Imputer starting as its CTC expert, and the release round trip."""
import itertools

import pytest
import torch

import zoo
from zoo.models.imputer import Imputer, block_decode, block_mask, imitation_loss, imputation_loss
from zoo.nn.ctc import collapse, viterbi_alignment

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"in_features": 6, "d": 8, "layers": 1, "heads": 2, "ff": 16, "channels": 2, "dropout": 0.0}


def _alignments(T: int, K: int, target: list[int]):
    for a in itertools.product(range(K + 1), repeat=T):
        if collapse(torch.tensor([a]), torch.tensor([T]))[0] == target:
            yield a


@pytest.mark.parametrize("observed", [[-1, -1, -1, -1, -1], [-1, 1, -1, -1, 0], [0, -1, 2, -1, -1]])
def test_imputation_loss_sums_the_consistent_alignments_with_its_gradient(observed):
    torch.manual_seed(0)
    T, K, target = 5, 2, [1, 2]
    logits = torch.randn(1, T + 1, K + 1).repeat(2, 1, 1).requires_grad_()   # twice; the second pads past T
    lp = logits.log_softmax(-1)
    terms = [lp[0, torch.arange(T), torch.tensor(a)].sum() for a in _alignments(T, K, target)
             if all(o < 0 or o == x for o, x in zip(observed, a))]
    brute = -torch.logsumexp(torch.stack(terms), 0)
    obs = torch.tensor([observed + [-1], observed + [2]])
    ours = imputation_loss(lp, torch.tensor([target, target]), torch.tensor([T, T]), torch.tensor([2, 2]), obs)
    assert torch.allclose(ours[0], brute) and torch.allclose(ours[1], brute)  # frames past the length are ignored
    g_brute, = torch.autograd.grad(brute, logits, retain_graph=True)
    g_ours, = torch.autograd.grad(ours[0], logits)
    assert torch.allclose(g_ours, g_brute, atol=1e-6)
    if max(observed) < 0:   # nothing observed: the CTC loss
        ctc = torch.nn.functional.ctc_loss(lp[:1].transpose(0, 1), torch.tensor([target]), [T], [2], reduction="none")
        assert torch.allclose(ours[0], ctc[0])


def test_viterbi_alignment_is_the_most_probable_alignment():
    torch.manual_seed(1)
    T, K = 6, 3
    lp = torch.randn(3, T, K + 1).log_softmax(-1)
    targets, lengths = torch.tensor([[1, 1, 2], [3, 0, 0], [2, 3, 0]]), torch.tensor([6, 4, 5])
    target_lengths = torch.tensor([3, 1, 2])
    got = viterbi_alignment(lp, targets, lengths, target_lengths)
    for b in range(3):
        n, y = int(lengths[b]), targets[b, : target_lengths[b]].tolist()
        best = max(_alignments(n, K, y), key=lambda a: float(lp[b, torch.arange(n), torch.tensor(a)].sum()))
        assert got[b, :n].tolist() == list(best) and got[b, n:].eq(0).all()


def test_block_masks_hide_the_same_count_in_every_block():
    g = torch.Generator().manual_seed(0)
    counts = set()
    for _ in range(40):
        m = block_mask(torch.tensor([16, 11]), 16, 4, g)
        assert m[1, 11:].all()                                       # past the length: masked
        per_block = m[0].view(4, 4).sum(1)
        assert (per_block == per_block[0]).all() and 1 <= per_block[0] <= 4
        counts.add(int(per_block[0]))
    assert counts == {1, 2, 3, 4}                                     # every count from 1 to B is drawn


def test_imitation_loss_by_hand():
    lp = torch.log(torch.tensor([[[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]]]))
    expert, masked = torch.tensor([[1, 1, 0]]), torch.tensor([[True, False, True]])
    assert torch.allclose(imitation_loss(lp, expert, masked, torch.tensor([3])), -torch.log(torch.tensor(0.5 * 0.9)))
    assert torch.allclose(imitation_loss(lp, expert, masked, torch.tensor([2])), -torch.log(torch.tensor(0.5)))


@pytest.mark.parametrize("frames", [20, 61])
def test_block_decoding_takes_b_passes_whatever_the_length(frames):
    torch.manual_seed(2)
    net = Imputer(6, 3, **{k: v for k, v in SMALL.items() if k != "in_features"}).eval()
    seen = []
    impute = net.impute
    net.impute = lambda h, n, a: seen.append(a.clone()) or impute(h, n, a)
    a, lengths = block_decode(net, torch.randn(2, frames, 6), torch.tensor([frames, frames - 7]), block=4)
    assert len(seen) == 4 and seen[0].eq(net.mask_id).all()
    for i, step in enumerate(seen[1:], 1):   # after pass i, each block has i positions filled (within the length)
        filled = step[0, : (step.shape[1] // 4) * 4].ne(net.mask_id).view(-1, 4).sum(1)
        assert filled.eq(i).all()
    assert not a.eq(net.mask_id).any() and a[1, lengths[1]:].eq(0).all()


def test_learns_a_tiny_batch_until_it_decodes_it():
    torch.manual_seed(3)
    x, lengths = torch.randn(2, 24, 6), torch.tensor([24, 20])
    y, y_lengths = torch.tensor([[1, 3, 2], [2, 2, 0]]), torch.tensor([3, 2])
    module = zoo.create("imputer", **{**SMALL, "d": 16, "ff": 32}, phone_set="cmudict39", loss="ctc")
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(150):
        loss = module.loss((x, lengths, y, y_lengths))
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    assert loss.item() < 0.1 and module(x, lengths) == [[1, 3, 2], [2, 2]]


def test_the_imputer_starts_as_its_ctc_expert_and_releases_without_it(tmp_path):
    torch.manual_seed(4)
    expert = zoo.create("imputer", **SMALL, loss="ctc")
    release = zoo.save_pretrained(expert, tmp_path / "expert")
    imputer = zoo.create("imputer", **SMALL, loss="imputation", block=4, expert=str(release)).eval()
    imputer.prepare_expert()                      # what fitting does first (building the recipe needs no release)
    x, lengths = torch.randn(2, 16, 6), torch.tensor([16, 9])
    want, n = expert.eval().net(x, lengths)
    partial = torch.randint(0, 41, (2, 4))
    got = imputer.net.impute(*imputer.net.encode(x, lengths), partial)
    assert torch.allclose(got, want, atol=1e-5)          # every alignment embedding is the mask's: CTC's output
    assert imputer(x, lengths) == collapse(want.argmax(-1), n)
    loss = imputer.train().loss((x, lengths, torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 1])))
    loss.backward()
    assert torch.isfinite(loss) and imputer.net.embed.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in imputer._expert[0].parameters())   # the expert stays fixed
    back = zoo.load(zoo.save_pretrained(imputer, tmp_path / "imputer"))      # loads without the expert
    assert "expert" not in back.zoo_init_args() and not any(k.startswith("_expert") for k in back.state_dict())
    assert all(torch.equal(back.state_dict()[k], v) for k, v in imputer.state_dict().items())
    with pytest.raises(ValueError, match="not an Imputer trained as a CTC expert"):
        zoo.create("imputer", **SMALL, loss="imputation",
                   expert=str(zoo.save_pretrained(imputer, tmp_path / "i2"))).prepare_expert()
    with pytest.raises(ValueError, match="give it the expert's sizes"):
        zoo.create("imputer", **{**SMALL, "d": 12}, loss="imputation", expert=str(release)).prepare_expert()


def test_shapes_and_release_round_trip(tmp_path):
    torch.manual_seed(5)
    module = zoo.create("imputer", **SMALL, loss="ctc").eval()
    x, lengths = torch.randn(3, 13, 6), torch.tensor([13, 8, 5])
    lp, n = module.net(x, lengths)
    assert lp.shape == (3, 4, 40) and n.tolist() == [4, 2, 2]          # 39 phones and the blank
    assert torch.allclose(lp.exp().sum(-1), torch.ones(3, 4))
    back = zoo.load(zoo.save_pretrained(module, tmp_path / "release")).eval()
    assert torch.equal(back.net(x, lengths)[0], lp)
    with pytest.raises(ValueError, match="loss must be"):
        zoo.create("imputer", **SMALL, loss="mle")
