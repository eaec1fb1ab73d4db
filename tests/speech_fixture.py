"""A tiny TIMIT in its real layout (NIST SPHERE .WAV, .PHN alignments), for the speech tests and runs."""
import struct

import torch


def write_sphere(path, samples, rate=16000, byte_format="01", coding="pcm"):
    fields = (f"database_id -s5 TIMIT\nsample_count -i {len(samples)}\nsample_rate -i {rate}\nchannel_count -i 1\n"
              f"sample_byte_format -s2 {byte_format}\nsample_n_bytes -i 2\nsample_coding -s{len(coding)} {coding}\n"
              "sample_min -i -32768\nend_head\n")
    header = f"NIST_1A\n   1024\n{fields}".encode().ljust(1024, b" ")
    fmt = "<" if byte_format == "01" else ">"
    path.write_bytes(header + struct.pack(f"{fmt}{len(samples)}h", *samples))


def write_timit(root, rate=16000, empty=None):
    """A tiny TIMIT tree: three training speakers, a core and a non-core test speaker, utterances of different
    lengths (0.1 to 0.35 s of noise) with three-phone alignments."""
    g = torch.Generator().manual_seed(0)
    layout = {"TRAIN/DR1/FCJF0": 3, "TRAIN/DR1/MDAC0": 3, "TRAIN/DR2/MJSW0": 3, "TEST/DR1/MDAB0": 2, "TEST/DR1/MREB0": 2}
    for folder, n in layout.items():
        d = root / folder
        d.mkdir(parents=True)
        for i in range(n):
            samples = (torch.randn(1600 + 800 * i, generator=g) * 3000).clamp(-32768, 32767).short().tolist()
            write_sphere(d / f"SX{i}.WAV", samples, rate=rate)
            third = len(samples) // 3
            text = "" if empty == f"{folder}/SX{i}" else f"0 {third} h#\n{third} {2 * third} sh\n{2 * third} {len(samples)} iy\n"
            (d / f"SX{i}.PHN").write_text(text)
        write_sphere(d / "SA1.WAV", [0] * 1600)  # dialect sentences are left out
        (d / "SA1.PHN").write_text("0 1600 h#\n")
    return root


WORDS = {"the": "DH AH", "cat": "K AE T", "sat": "S AE T", "on": "AA N", "a": "AH", "mat": "M AE T"}


def write_synthetic(root):
    """A tiny corpus in LibriSpeech's layout (train/validation/test, 22,050 Hz FLAC tones standing in for speech)
    and a matching CMUdict file; returns (corpus folder, dictionary path)."""
    import soundfile

    g = torch.Generator().manual_seed(0)
    sentences = [["the", "cat", "sat"], ["a", "cat", "sat", "on", "the", "mat"], ["the", "mat"]]
    for split, n in (("train", 4), ("validation", 2), ("test", 2)):
        folder = root / "synthetic" / split / "en-us-m1" / "ca01"
        folder.mkdir(parents=True)
        lines = []
        for i in range(n):
            words = sentences[i % len(sentences)]
            audio = 0.1 * torch.randn(2205 * (len(words) + 1), generator=g)
            soundfile.write(str(folder / f"en-us-m1-ca01-{i:04d}.flac"), audio.numpy(), 22050)
            lines.append(f"en-us-m1-ca01-{i:04d} {' '.join(words).upper()}")
        (folder / "en-us-m1-ca01.trans.txt").write_text("\n".join(lines) + "\n")
    cmudict = root / "cmudict.dict"
    cmudict.write_text("".join(f"{w} {p}\n" for w, p in WORDS.items()))
    return root / "synthetic", cmudict
