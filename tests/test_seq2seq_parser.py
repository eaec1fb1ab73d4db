"""Grammar as a Foreign Language (arXiv 1412.7449): the reversed input, attention by hand, the step-by-step decoder
equal to the unrolled one, beam search finding the most probable sequence, learning a tiny treebank until it parses
it, F1 through the module, and the release round trip."""
import itertools

import pytest
import torch

import zoo
from zoo.data.parsing import linearise, parse_trees, target_tokens
from zoo.models.seq2seq_parser import Seq2SeqParser, reverse_within

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"d": 8, "embed": 6, "layers": 2, "dropout": 0.0}


def test_reverse_within_each_length():
    x = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0]])
    assert reverse_within(x, torch.tensor([4, 2])).tolist() == [[4, 3, 2, 1], [6, 5, 0, 0]]


def test_attention_by_hand():
    torch.manual_seed(0)
    net = Seq2SeqParser(10, 7, **SMALL).eval()
    src, n = torch.randint(2, 10, (2, 5)), torch.tensor([5, 3])
    H, mask, keys, state, feed = net.encode(src, n)
    logits, new, readout = net.step(torch.tensor([1, 1]), state, feed, H, mask, keys)
    d_t = new[-1][0]
    for b in range(2):
        k = int(n[b])
        u = torch.stack([net.v.weight[0] @ torch.tanh(net.W1.weight @ H[b, i] + net.W2.weight @ d_t[b])
                         for i in range(k)])
        want = (u.softmax(0)[:, None] * H[b, :k]).sum(0)      # padding gets no attention
        assert torch.allclose(readout[b], want, atol=1e-6)
        assert torch.allclose(logits[b], net.output(torch.cat([d_t[b], want])), atol=1e-6)


@pytest.mark.parametrize("attention", [True, False])
def test_teacher_forcing_equals_decoding_step_by_step(attention):
    torch.manual_seed(1)
    net = Seq2SeqParser(10, 7, **SMALL, attention=attention).eval()
    src, n, tgt = torch.randint(2, 10, (3, 5)), torch.tensor([5, 2, 4]), torch.randint(1, 7, (3, 6))
    H, mask, keys, state, feed = net.encode(src, n)
    steps = []
    for t in range(6):
        logits, state, feed = net.step(tgt[:, t], state, feed, H, mask, keys)
        steps.append(logits)
    assert torch.allclose(net(src, n, tgt), torch.stack(steps, 1), atol=1e-5)


def test_beam_search_finds_the_most_probable_sequence():
    torch.manual_seed(2)
    net = Seq2SeqParser(6, 4, **SMALL).eval()
    src = torch.randint(2, 6, (4,))

    def logp(seq):       # log p(seq, <eos>) by teacher forcing
        full = torch.tensor([seq + [1]])
        lp = net(src[None], torch.tensor([4]), torch.cat([torch.ones(1, 1, dtype=torch.long), full[:, :-1]], 1))
        return float(lp.detach().log_softmax(-1).gather(2, full[..., None]).sum())

    best = max((list(s) for k in range(4) for s in itertools.product([0, 2, 3], repeat=k)), key=logp)
    assert net.beam_search(src, 4, beam=50, max_len=3) == best


def _tiny_batch(trees, labels):
    tokens = target_tokens(labels)
    words = sorted({w for t in trees for w in t.words()})
    src = torch.nn.utils.rnn.pad_sequence([torch.tensor([words.index(w) + 2 for w in t.words()]) for t in trees],
                                          batch_first=True)
    tgt = torch.nn.utils.rnn.pad_sequence([torch.tensor([tokens.index(x) for x in linearise(t)] + [1]) for t in trees],
                                          batch_first=True)
    n = torch.tensor([len(t.words()) for t in trees])
    tn = torch.tensor([len(linearise(t)) + 1 for t in trees])
    punct = torch.nn.utils.rnn.pad_sequence([torch.tensor([tag == "." for tag in t.tags()]) for t in trees],
                                            batch_first=True)
    return src, n, tgt, tn, punct, len(words) + 2


def test_learns_a_tiny_treebank_until_it_parses_it(tmp_path):
    torch.manual_seed(3)
    trees = parse_trees("(S (NP (DT the) (NN cat)) (VP (VBD sat)) (. .))"
                        "(S (NP (PRP it)) (VP (VBD saw) (NP (DT the) (NN dog))) (. .))")
    *batch, vocab = _tiny_batch(trees, ["NP", "VP", "S"])
    module = zoo.create("seq2seq_parser", vocab_size=vocab, labels=["NP", "VP", "S"], d=32, embed=16, layers=1,
                        dropout=0.0, lr=1e-2)
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(120):
        loss = module.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    gold, test, repaired = module.trees(batch)
    assert loss.item() < 0.05 and [str(t) for t in test] == [str(t) for t in gold] and repaired == 0
    back = zoo.load(zoo.save_pretrained(module, tmp_path / "release")).eval()
    assert all(torch.equal(back.state_dict()[k], v) for k, v in module.state_dict().items())
    assert back(batch[0], batch[1]) == module(batch[0], batch[1])
    assert back.hparams.labels == ["NP", "VP", "S"]


def test_shapes_and_bad_arguments():
    module = zoo.create("seq2seq_parser", vocab_size=12, **SMALL)
    src, n, tgt = torch.randint(2, 12, (2, 4)), torch.tensor([4, 3]), torch.randint(1, 20, (2, 5))
    assert module.net(src, n, tgt).shape == (2, 5, len(target_tokens(module.hparams.labels)))  # 3 + 2 x 26 labels
    assert len(module.tokens) == 55
