"""The backprop baseline: shapes, head naming, and overfitting one batch."""
import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from zoo.models.baselines import MLPClassifier


def test_shapes_and_head_keys():
    m = MLPClassifier(in_features=64, hidden=[20, 30], num_classes=7)
    assert m(torch.rand(4, 1, 8, 8)).shape == (4, 7)
    head = [k for k in m.state_dict() if k.startswith("net.head.")]
    assert head == ["net.head.weight", "net.head.bias"]


def test_overfits_one_batch():
    from zoo.data import DigitsDataModule

    dm = DigitsDataModule(batch_size=32)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    L.seed_everything(0)
    m = MLPClassifier(in_features=64, hidden=[64, 64], num_classes=10, lr=0.05, cooldown=False)
    L.Trainer(max_epochs=100, enable_progress_bar=False, enable_model_summary=False, logger=False,
              enable_checkpointing=False).fit(m, DataLoader(TensorDataset(x, y), batch_size=32))
    with torch.no_grad():
        assert (m.eval()(x).argmax(1) == y).all()


def test_cnn_shapes_features_and_overfit():
    from zoo.data import DigitsDataModule
    from zoo.models.baselines import CNNClassifier

    m = CNNClassifier(image_size=28, channels=[4, 8], hidden=[16], num_classes=7)
    feats = m.net.features(torch.rand(3, 1, 28, 28))
    assert [tuple(f.shape) for f in feats] == [(3, 4, 14, 14), (3, 8, 7, 7), (3, 16)]
    assert m(torch.rand(3, 1, 28, 28)).shape == (3, 7)
    dm = DigitsDataModule(batch_size=32)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    x = torch.nn.functional.interpolate(x, size=28)
    L.seed_everything(0)
    m = CNNClassifier(channels=[8, 16], hidden=[32], optimizer="adam", lr=3e-3, weight_decay=0.0, cooldown=False)
    L.Trainer(max_epochs=60, enable_progress_bar=False, enable_model_summary=False, logger=False,
              enable_checkpointing=False).fit(m, DataLoader(TensorDataset(x, y), batch_size=32))
    with torch.no_grad():
        assert (m.eval()(x).argmax(1) == y).all()
