"""CheXpert from its real layout: a tiny release (CheXpert-v1.0-small/ with train.csv, valid.csv and grey JPEGs under
train/patientN/studyM/) read as multi-label targets with the U-Ones / U-Zeros policies, frontal views only,
validation patients disjoint from training ones; a missing column, an unknown label value, a missing image or no
release at all are clear errors."""
import pytest
from medical_fixture import chexpert_labels as _labels
from medical_fixture import write_chexpert_release as _release

from zoo.data.chexpert import COMPETITION, CheXpertDataModule


@pytest.fixture()
def chexpert(tmp_path):
    train = [(p, view, _labels(atelectasis="1.0", edema="-1.0", cardiomegaly="0.0") if p % 2 else _labels())
             for p in range(1, 21) for view in ("Frontal", "Lateral")]
    valid = [(p, "Frontal", _labels(pleural_effusion="1.0")) for p in (101, 102)]
    return _release(tmp_path, {"train": train, "valid": valid})


def test_multilabel_targets_with_both_uncertainty_policies(chexpert):
    dm = CheXpertDataModule(data_dir=str(chexpert.parent), size=16, val_fraction=0.2, batch_size=4, num_workers=0)
    dm.prepare_data()
    dm.setup()
    assert dm.classes == COMPETITION and len(dm.train_set) + len(dm.val_set) == 20  # frontal views only
    assert len(dm.val_set) == 4 and len(dm.test_set) == 2
    train_patients = {p.parts[-3] for p in dm.train_set.paths}
    assert not train_patients & {p.parts[-3] for p in dm.val_set.paths}
    x, y = dm.train_set.__getitems__([0, 1])
    assert x.shape == (2, 3, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1
    odd = [i for i, p in enumerate(dm.train_set.paths) if int(p.parts[-3][7:]) % 2][0]
    # Atelectasis 1, Cardiomegaly 0, Consolidation empty -> 0, Edema uncertain -> 1 (U-Ones), Effusion empty -> 0
    assert dm.train_set[odd][1].tolist() == [1, 0, 0, 1, 0]
    assert dm.test_set.labels.tolist() == [[0, 0, 0, 0, 1]] * 2
    zeros = CheXpertDataModule(data_dir=str(chexpert.parent), uncertain="zeros", val_fraction=0.2, num_workers=0)
    zeros.setup()
    odd = [i for i, p in enumerate(zeros.train_set.paths) if int(p.parts[-3][7:]) % 2][0]
    assert zeros.train_set[odd][1].tolist() == [1, 0, 0, 0, 0]
    batch = next(iter(dm.train_dataloader()))
    assert batch[0].shape == (4, 3, 16, 16) and batch[1].shape == (4, 5)


def test_bad_releases_are_clear_errors(chexpert, tmp_path_factory):
    with pytest.raises(ValueError, match="unknown CheXpert observation"):
        CheXpertDataModule(tasks=["Cardiomegally"])
    with pytest.raises(ValueError, match="'ones' \\(U-Ones\\) or 'zeros'"):
        CheXpertDataModule(uncertain="maybe")
    valid = chexpert / "valid.csv"
    text = valid.read_text()
    valid.write_text(text.replace("Edema", "Oedema"))
    with pytest.raises(ValueError, match=r"no column\(s\) \['Edema'\]"):
        CheXpertDataModule(data_dir=str(chexpert), num_workers=0).setup()
    valid.write_text(text.replace(",1.0,", ",yes,", 1))
    with pytest.raises(ValueError, match="line 2: Pleural Effusion is 'yes'"):
        CheXpertDataModule(data_dir=str(chexpert), num_workers=0).setup()
    valid.write_text(text)
    next(chexpert.glob("valid/patient00101/study1/*.jpg")).unlink()
    with pytest.raises(FileNotFoundError, match="lists 1 image.*patient00101"):
        CheXpertDataModule(data_dir=str(chexpert), num_workers=0).setup()
    with pytest.raises(FileNotFoundError, match="(?s)train.csv and valid.csv.*stanfordmlgroup"):
        CheXpertDataModule(data_dir=str(tmp_path_factory.mktemp("none"))).prepare_data()
