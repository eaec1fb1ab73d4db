"""Speech corpora in their real layouts: NIST SPHERE audio and .PHN alignments as TIMIT ships them (tiny files
written here), the 61 -> 39 phone folding and the core test set."""
import math

import pytest
import torch
from speech_fixture import write_sphere, write_timit

from zoo.data.speech import (PHONES_39, TIMIT_PHONES, BucketBatches, SpeechDataModule, deltas, filterbank_features,
                              fold_39, read_phn, read_sphere, timit_utterances)


@pytest.mark.parametrize("byte_format", ["01", "10"])
def test_sphere_samples_and_rate(tmp_path, byte_format):
    write_sphere(tmp_path / "SX1.WAV", [0, 16384, -32768, 327], byte_format=byte_format)
    audio, rate = read_sphere(tmp_path / "SX1.WAV")
    assert rate == 16000 and audio.shape == (1, 4)
    assert audio[0].tolist() == [0.0, 0.5, -1.0, 327 / 32768]


def test_sphere_refuses_riff_and_shorten(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF" + bytes(60))
    with pytest.raises(ValueError, match="not a NIST SPHERE file"):
        read_sphere(tmp_path / "a.wav")
    write_sphere(tmp_path / "b.wav", [1, 2], coding="pcm,embedded-shorten-v2.00")
    with pytest.raises(ValueError, match="sph2pipe"):
        read_sphere(tmp_path / "b.wav")


def test_phn_lines_and_errors_name_the_line(tmp_path):
    (tmp_path / "a.PHN").write_text("0 3050 h#\n3050 4559 sh\n4559 5723 ix\n")
    assert read_phn(tmp_path / "a.PHN") == [(0, 3050, "h#"), (3050, 4559, "sh"), (4559, 5723, "ix")]
    (tmp_path / "b.PHN").write_text("0 3050 h#\n3050 4559 zz\n")
    with pytest.raises(ValueError, match="b.PHN:2: 'zz' is not one of the 61"):
        read_phn(tmp_path / "b.PHN")
    (tmp_path / "c.PHN").write_text("0 h#\n")
    with pytest.raises(ValueError, match="c.PHN:1: expected 'start end phone'"):
        read_phn(tmp_path / "c.PHN")


def test_folding_61_to_39():
    assert len(TIMIT_PHONES) == 61 and len(PHONES_39) == 39
    assert fold_39(["h#", "sh", "ix", "hv", "eh", "dcl", "q", "axr", "pau", "zh", "en"]) == \
        ["sil", "sh", "ih", "hh", "eh", "sil", "er", "sil", "sh", "n"]
    with pytest.raises(ValueError, match="'zz' is not one of the 61"):
        fold_39(["zz"])


def test_utterances_skip_sa_and_select_the_core_test_set(tmp_path):
    for split, dr, spk, utt in [("TEST", "DR1", "MDAB0", "SI1039"), ("TEST", "DR1", "MDAB0", "SA1"),
                                ("TEST", "DR1", "MREB0", "SX5"), ("TRAIN", "DR2", "FAEM0", "SI762")]:
        d = tmp_path / split / dr / spk
        d.mkdir(parents=True, exist_ok=True)
        write_sphere(d / f"{utt}.WAV", [0, 1])
        (d / f"{utt}.PHN").write_text("0 2 h#\n")
    assert [p.name for p in timit_utterances(tmp_path, "test")] == ["SI1039", "SX5"]
    assert [p.name for p in timit_utterances(tmp_path, "test", core=True)] == ["SI1039"]
    assert [p.parent.name for p in timit_utterances(tmp_path, "train")] == ["FAEM0"]
    with pytest.raises(FileNotFoundError, match="no DEV folder"):
        timit_utterances(tmp_path, "dev")


def test_deltas_by_hand():
    c = torch.tensor([0.0, 4.0, 16.0, 36.0, 64.0])[:, None]
    # edges repeated: [0, 0 | 0, 4, 16, 36, 64 | 64, 64]; d_t = (1·(c[t+1] − c[t−1]) + 2·(c[t+2] − c[t−2])) / 10
    assert deltas(c)[:, 0].tolist() == pytest.approx([3.6, 8.8, 16.0, 16.8, 12.4])


def test_filterbank_features_of_a_tone():
    rate, n = 16000, 8000
    t = torch.arange(n) / rate
    tone = 0.5 * torch.sin(2 * math.pi * 1000.0 * t)
    f = filterbank_features(tone, rate)
    assert f.shape == (1 + (n - 400) // 160, 123)  # 25 ms windows every 10 ms; 40 mels + energy, with Δ and ΔΔ
    mel_of = lambda hz: 2595 * math.log10(1 + hz / 700)  # HTK's mel scale
    centres = [700 * (10 ** (m / 2595) - 1) for m in torch.linspace(0, mel_of(rate / 2), 42)[1:-1].tolist()]
    loudest = int(f[10, :40].argmax())
    assert abs(centres[loudest] - 1000.0) < 100  # the band around 1 kHz holds the tone
    # the log energy of a steady tone is the same in every frame, so its Δ and ΔΔ are ~0 away from the edges
    assert f[5:-5, 40].std() < 0.01 and f[5:-5, 81].abs().max() < 0.01 and f[5:-5, 122].abs().max() < 0.01
    with pytest.raises(ValueError, match="shorter than one 25.0 ms window"):
        filterbank_features(torch.zeros(100), rate)


def test_timit_data_module_splits_normalises_and_buckets(tmp_path):
    dm = SpeechDataModule(data_dir=str(write_timit(tmp_path)), val_speakers=1, batch_size=2, eval_batch_size=2)
    dm.setup()
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes == {"train": 6, "validation": 3, "test": 2}  # core test set: MDAB0 only
    speakers = {k: {u.name.split("/")[0] for u in v} for k, v in dm.splits.items()}
    assert not speakers["train"] & speakers["validation"] and speakers["test"] == {"MDAB0"}
    frames = torch.cat([u.features for u in dm.splits["train"]])
    assert frames.shape[1] == dm.in_features == 123
    assert frames.mean(0).abs().max() < 1e-4 and (frames.std(0) - 1).abs().max() < 1e-3
    h, sh, iy = (TIMIT_PHONES.index(p) + 1 for p in ("h#", "sh", "iy"))
    assert dm.splits["test"][0].labels.tolist() == [h, sh, iy]
    batches = list(dm.train_dataloader())
    assert len(batches) == 3 and all(len(b) == 4 for b in batches)
    for x, lengths, y, y_lengths in batches:  # sorted by length before batching: neighbours in length share a batch
        assert lengths.max() - lengths.min() <= 5 * 2 and x.shape[1] == lengths.max() and y_lengths.tolist() == [3, 3]


def test_buckets_are_shared_out_evenly_between_processes(tmp_path):
    dm = SpeechDataModule(data_dir=str(write_timit(tmp_path)), val_speakers=1, core_test=False)
    dm.setup()
    utts = dm.splits["train"] + dm.splits["validation"]  # 9 utterances: 5 batches of 2, cut to 4 for two processes
    ranks = [[b[0].shape[1] for b in BucketBatches(utts, 2, True, world=2, rank=r)] for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    names = [[tuple(u.name for u in batch) for batch in BucketBatches(utts, 2, True, world=2, rank=r).batches]
             for r in (0, 1)]
    assert names[0] == names[1]  # the same batches on both; each takes its own share of the shuffled order
    epochs = [[b[1].tolist() for b in BucketBatches(utts, 2, True, epoch=lambda e=e: e)] for e in (0, 1)]
    assert sorted(map(tuple, epochs[0])) == sorted(map(tuple, epochs[1])) and epochs[0] != epochs[1]


def test_timit_bad_input_is_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="audio at 8000 Hz where 16000 Hz is expected: resample"):
        SpeechDataModule(data_dir=str(write_timit(tmp_path / "a", rate=8000)), val_speakers=1).setup()
    with pytest.raises(ValueError, match="SX1.PHN: empty alignment"):
        SpeechDataModule(data_dir=str(write_timit(tmp_path / "b", empty="TEST/DR1/MDAB0/SX1")), val_speakers=1).setup()
    with pytest.raises(FileNotFoundError, match="LDC93S1"):
        SpeechDataModule(data_dir=str(tmp_path / "nothing")).prepare_data()
    root = write_timit(tmp_path / "c")
    (root / "TRAIN/DR1/FCJF0/SX2.PHN").write_text("0 100 h#\n100 200 zz\n")
    with pytest.raises(ValueError, match="SX2.PHN:2: 'zz' is not one of the 61 TIMIT phones"):
        SpeechDataModule(data_dir=str(root), val_speakers=1).setup()


def test_librispeech_layout_and_cmudict_phones(tmp_path):
    import soundfile

    from zoo.data.speech import read_audio, read_cmudict, read_librispeech, words_to_phones

    chapter = tmp_path / "dev-clean" / "84" / "121123"
    chapter.mkdir(parents=True)
    for i, n in enumerate((1600, 800)):
        soundfile.write(str(chapter / f"84-121123-000{i}.flac"), (torch.arange(n) % 7 / 10 - 0.3).numpy(), 16000)
    (chapter / "84-121123.trans.txt").write_text("84-121123-0001 THE CAT\n84-121123-0000 A CAT\n")
    utts = read_librispeech(tmp_path / "dev-clean")
    assert [(u[0], u[2]) for u in utts] == [("84-121123-0000", ["A", "CAT"]), ("84-121123-0001", ["THE", "CAT"])]
    audio, rate = read_audio(utts[0][1])
    assert rate == 16000 and audio.shape == (1, 1600) and abs(float(audio[0, 1]) - (-0.2)) < 1e-4  # FLAC is lossless
    (tmp_path / "cmudict.dict").write_text("a AH\na(2) EY\ncat K AE T\nthe DH AH\nthe(2) DH IY\n")
    lexicon = read_cmudict(tmp_path / "cmudict.dict")
    assert words_to_phones(["THE", "CAT"], lexicon) == ["DH", "AH", "K", "AE", "T"]
    with pytest.raises(KeyError, match="'dog'"):
        words_to_phones(["the", "dog"], lexicon)
    (chapter / "84-121123.trans.txt").write_text("84-121123-0002 A DOG\n")
    with pytest.raises(FileNotFoundError, match="trans.txt:1: 84-121123-0002.flac is missing"):
        read_librispeech(tmp_path / "dev-clean")


def test_sphinx_transcriptions_as_pocketsphinx_testdata_writes_them(tmp_path):
    from zoo.data.speech import read_sphinx_transcription

    (tmp_path / "transcription").write_text("<s> he was not an ill disposed young man </s> (sense-0880)\n"
                                            "<s> ten of clubs  </s> (001)\n\n")
    assert read_sphinx_transcription(tmp_path / "transcription") == [
        ("sense-0880", "he was not an ill disposed young man".split()), ("001", ["ten", "of", "clubs"])]
    (tmp_path / "bad").write_text("<s> ten of clubs </s>\n")
    with pytest.raises(ValueError, match="bad:1: expected 'words \\(utterance id\\)'"):
        read_sphinx_transcription(tmp_path / "bad")


def test_synthetic_corpus_gets_cmudict_phones_and_its_own_splits(tmp_path):
    from speech_fixture import write_synthetic

    from zoo.data.speech import CMUDICT_PHONES

    corpus, cmudict = write_synthetic(tmp_path)
    dm = SpeechDataModule("synthetic", data_dir=str(corpus), cmudict=str(cmudict), batch_size=2)
    dm.setup()
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 4, "validation": 2, "test": 2}
    assert dm.phone_set == "cmudict39" and dm.num_phones == 39 and dm.sample_rate == 22050
    assert [CMUDICT_PHONES[i - 1] for i in dm.splits["train"][0].labels] == "DH AH K AE T S AE T".split()
    with pytest.raises(ValueError, match="audio at 22050 Hz where 16000 Hz is expected"):
        SpeechDataModule("synthetic", data_dir=str(corpus), cmudict=str(cmudict), sample_rate=16000).setup()
