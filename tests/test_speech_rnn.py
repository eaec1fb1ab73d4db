"""Graves, Mohamed & Hinton 2013 (arXiv 1303.5778): the deep BLSTM ignores padding, best-path CTC decoding by hand,
batched greedy transducer decoding equal to one utterance at a time, both output layers learning a tiny batch
until they decode it, weight noise, the phone strings scored, and the release round trip. (The transducer loss
itself is tested against enumeration in test_losses.py.)"""
import itertools

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.losses import transducer_loss
from zoo.data.speech import TIMIT_PHONES
from zoo.models.speech_rnn import CTCNet, DeepBLSTM, Transducer, best_path
from zoo.models.speech_rnn.model import ctc_beam_search

pytestmark = pytest.mark.usefixtures("one_thread")


def test_padding_changes_nothing():
    torch.manual_seed(0)
    net = DeepBLSTM(5, 6, layers=2)
    x, lengths = torch.randn(2, 9, 5), torch.tensor([9, 4])
    both = net(x, lengths)
    alone = net(x[1:, :4], lengths[1:])
    assert both.shape == (2, 9, 12)
    assert torch.allclose(both[1, :4], alone[0], atol=1e-6)  # the backward direction starts at the real last frame
    assert both[1, 4:].abs().max() == 0


def test_best_path_merges_repeats_and_drops_blanks_within_each_length():
    frames = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 3], [0, 2, 2, 2, 0, 0, 4, 4]])
    log_probs = torch.nn.functional.one_hot(frames, 5).float().log()
    assert best_path(log_probs, torch.tensor([8, 6])) == [[1, 1, 2, 3], [2]]


def test_batched_greedy_decoding_equals_one_utterance_at_a_time():
    torch.manual_seed(1)
    net = Transducer(5, 4, hidden=6, layers=1, pred_hidden=5, joint=7).eval()
    with torch.no_grad():
        net.output.bias[0] -= 1.0  # emit more often, so that utterances go out of step with each other
    x, lengths = torch.randn(3, 6, 5), torch.tensor([6, 3, 5])
    batched = net.greedy(x, lengths, max_symbols=3)
    alone = [net.greedy(x[b:b + 1, :int(n)], lengths[b:b + 1], max_symbols=3)[0] for b, n in enumerate(lengths)]
    assert batched == alone and any(batched)


@pytest.mark.parametrize("kind", ["ctc", "transducer"])
def test_learns_a_tiny_batch_until_it_decodes_it(kind):
    torch.manual_seed(2)
    x, lengths = torch.randn(2, 8, 5), torch.tensor([8, 6])
    y, y_lengths = torch.tensor([[1, 3, 2], [2, 2, 0]]), torch.tensor([3, 2])
    net = CTCNet(5, 3, hidden=16, layers=1) if kind == "ctc" else Transducer(5, 3, 16, 1, pred_hidden=8, joint=16)
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    for _ in range(150):
        if kind == "ctc":
            loss = net.loss(net(x, lengths), lengths, y, y_lengths)
        else:
            loss = transducer_loss(net(x, lengths, y), y, lengths, y_lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    decoded = best_path(net(x, lengths), lengths) if kind == "ctc" else net.greedy(x, lengths)
    assert loss.item() < 0.1 and decoded == [[1, 3, 2], [2, 2]]


SMALL = {"in_features": 5, "hidden": 6, "layers": 1, "pred_hidden": 5, "joint": 7}


def test_weight_noise_is_on_for_the_gradient_and_off_for_the_update():
    torch.manual_seed(3)
    module = zoo.create("speech_rnn", **SMALL, weight_noise=0.5)
    clean = {k: v.clone() for k, v in module.state_dict().items()}
    module.on_train_batch_start(None, 0)
    noisy = {k: v.clone() for k, v in module.state_dict().items()}
    moved = [k for k in clean if not torch.equal(clean[k], noisy[k])]
    assert moved and all(clean[k].dim() >= 2 for k in moved)  # weight matrices only, biases untouched
    module.on_before_optimizer_step(None)
    for k, v in module.state_dict().items():
        assert torch.allclose(v, clean[k], atol=1e-6), k  # the optimiser steps from the clean weights


def test_phone_strings_are_folded_to_39():
    ids = [TIMIT_PHONES.index(p) + 1 for p in ("h#", "sh", "ix", "q", "pcl", "p")]
    assert zoo.create("speech_rnn", **SMALL).phone_string(ids) == "sil sh ih sil p"
    assert zoo.create("speech_rnn", **SMALL, phone_set="cmudict39").phone_string([1, 39]) == "AA ZH"


@pytest.mark.parametrize("output", ["ctc", "transducer"])
def test_shapes_and_release_round_trip(output, tmp_path):
    torch.manual_seed(0)
    module = zoo.create("speech_rnn", **SMALL, output=output).eval()
    x, lengths = torch.randn(2, 9, 5), torch.tensor([9, 6])
    y = torch.tensor([[3, 1, 2], [5, 5, 0]])
    loss = module.loss((x, lengths, y, torch.tensor([3, 2])))
    assert loss.dim() == 0 and loss.item() > 0 and len(module(x, lengths)) == 2
    module.hparams.beam = 3
    assert len(module(x, lengths)) == 2 and all(0 < i <= 61 for h in module(x, lengths) for i in h)
    module.hparams.beam = 1
    back = zoo.load(zoo.save_pretrained(module, tmp_path / "release"))
    for k, v in module.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    assert back(x, lengths) == module(x, lengths)


def _all_label_sequences(K: int, longest: int):
    yield ()
    for n in range(1, longest + 1):
        yield from itertools.product(range(1, K + 1), repeat=n)


def test_ctc_prefix_beam_search_finds_the_most_probable_labelling():
    torch.manual_seed(4)
    T, K = 5, 3
    for _ in range(3):
        lp = torch.randn(T, K + 1).log_softmax(-1)

        def log_p(y):  # every alignment of y, by F.ctc_loss; the empty labelling is all blanks
            if not y:
                return lp[:, 0].sum().item()
            return -F.ctc_loss(lp[:, None], torch.tensor([y]), torch.tensor([T]), torch.tensor([len(y)]),
                               reduction="sum").item()
        want = max(_all_label_sequences(K, T), key=log_p)
        assert tuple(ctc_beam_search(lp, T, beam=1000)) == want


def test_transducer_beam_search_finds_the_most_probable_labelling():
    for seed in range(2):
        torch.manual_seed(seed)
        net = Transducer(4, 3, hidden=5, layers=1, pred_hidden=4, joint=6).eval()
        with torch.no_grad():
            net.output.bias[0] += 1.0  # most of the probability on short labellings, so enumeration covers it
        x, T = torch.randn(1, 4, 4), 4

        def log_p(y):
            y = torch.tensor([y]) if y else torch.zeros(1, 0, dtype=torch.long)
            with torch.no_grad():
                return -transducer_loss(net(x, torch.tensor([T]), y), y, torch.tensor([T]),
                                        torch.tensor([y.shape[1]])).item()
        want = max(_all_label_sequences(3, 5), key=log_p)
        assert tuple(net.beam_search(x, T, beam=300, normalise_length=False)) == want, seed


def test_fit_records_the_feature_statistics_and_transcribe_uses_them(tmp_path, monkeypatch):
    from speech_fixture import write_timit

    from zoo.data.speech import SpeechDataModule, filterbank_features

    dm = SpeechDataModule(data_dir=str(write_timit(tmp_path)), val_speakers=1)
    module = zoo.create("speech_rnn", in_features=123, hidden=6, layers=1)
    monkeypatch.setattr(module, "_trainer", type("T", (), {"datamodule": dm})())
    module.setup("fit")
    assert torch.equal(module.feature_mean, dm.feature_mean) and torch.equal(module.feature_std, dm.feature_std)
    audio = torch.randn(4000) * 0.1
    x = (filterbank_features(audio, 16000) - dm.feature_mean) / dm.feature_std
    want = module.phone_string(module(x[None], torch.tensor([len(x)]))[0])
    back = zoo.load(zoo.save_pretrained(module, tmp_path / "release"))  # the statistics travel with the weights
    assert back.transcribe(audio, 16000) == want
    with pytest.raises(ValueError, match="--model.init_args.phone_set=timit61 --model.init_args.in_features=123"):
        wrong = zoo.create("speech_rnn", in_features=41, hidden=6, layers=1)
        monkeypatch.setattr(wrong, "_trainer", type("T", (), {"datamodule": dm})())
        wrong.setup("fit")


def test_transducer_starts_from_a_ctc_release(tmp_path):
    torch.manual_seed(5)
    ctc = zoo.create("speech_rnn", **SMALL, output="ctc")
    with torch.no_grad():
        ctc.feature_mean.fill_(0.5)
    release = zoo.save_pretrained(ctc, tmp_path / "ctc")
    trans = zoo.create("speech_rnn", **SMALL, output="transducer", transcription_from=str(release))
    trans.start_transcription()                   # what fitting does first (building the recipe needs no release)
    for k, v in ctc.net.encoder.state_dict().items():
        assert torch.equal(trans.net.encoder.state_dict()[k], v), k
    assert torch.equal(trans.feature_mean, ctc.feature_mean)
    assert "transcription_from" not in trans.zoo_init_args()  # its release loads without the CTC release
    with pytest.raises(ValueError, match="not a CTC speech model"):
        zoo.create("speech_rnn", **SMALL, output="transducer",
                   transcription_from=str(zoo.save_pretrained(trans, tmp_path / "t"))).start_transcription()
    with pytest.raises(ValueError, match="output='transducer'"):
        zoo.create("speech_rnn", **SMALL, output="ctc", transcription_from=str(release))


def test_stacked_frames_by_hand_and_in_the_module(tmp_path):
    from zoo.models.speech_rnn.model import stack_frames

    x = torch.arange(2 * 5 * 2.0).view(2, 5, 2)
    y, n = stack_frames(x, torch.tensor([5, 3]), 2)
    assert y.shape == (2, 3, 4) and n.tolist() == [3, 2]
    assert y[0, 1].tolist() == [4, 5, 6, 7] and y[0, 2].tolist() == [8, 9, 0, 0]   # the last group zero-padded
    module = zoo.create("speech_rnn", **SMALL, stack=3).eval()
    assert module.net.encoder.lstm.input_size == 15
    assert len(module(torch.randn(2, 7, 5), torch.tensor([7, 4]))) == 2
    with pytest.raises(ValueError, match="stacks 3 frames"):
        zoo.create("speech_rnn", **SMALL, output="transducer",
                   transcription_from=str(zoo.save_pretrained(module, tmp_path / "r"))).start_transcription()


def test_analysis_scores_the_real_clips_at_the_training_rate(tmp_path, monkeypatch):
    import types

    import soundfile

    import zoo.data.speech as speech

    (tmp_path / "cards").mkdir()
    lines = []
    for i, words in enumerate((["the", "cat"], ["a", "mat"])):
        soundfile.write(str(tmp_path / "cards" / f"00{i}.wav"), (0.1 * torch.randn(8000)).numpy(), 16000)
        lines.append(f"<s> {' '.join(words)} </s> (00{i})")
    (tmp_path / "cards" / "cards.transcription").write_text("\n".join(lines) + "\n")
    (tmp_path / "dict").write_text("the DH AH\ncat K AE T\na AH\nmat M AE T\n")
    monkeypatch.setattr(speech, "SPHINX_TEST_DATA", tmp_path)
    assert [c[0] for c in speech.real_clips()] == ["000", "001"]
    seen = []
    module = zoo.create("speech_rnn", in_features=123, hidden=4, layers=1, phone_set="cmudict39")
    transcribe = module.transcribe
    module.transcribe = lambda audio, rate, *a: seen.append((len(audio), rate)) or transcribe(audio, rate, *a)
    dm = types.SimpleNamespace(sample_rate=22050, n_mels=40, order=2, cmudict=str(tmp_path / "dict"))
    out = module.analyse(tmp_path, dm)
    assert seen == [(11025, 22050)] * 2                 # half a second, resampled from 16 kHz to the training rate
    assert out["metrics"]["real/per"] >= 0 and "| 001 | a mat | AH M AE T |" in next(iter(out["tables"].values()))
    monkeypatch.setattr(speech, "SPHINX_TEST_DATA", tmp_path / "absent")
    assert module.analyse(tmp_path, dm) == {}
