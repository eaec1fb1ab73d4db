"""SimCLR's parts built so far (issue 15): the two-view augmentation pipeline (zoo.data.views). The NT-Xent loss,
with its cross-rank gather, is tested in test_losses.py."""
import pytest
import torch

from zoo.data.views import SimCLRViews, TwoViews


def test_views_are_two_independent_draws_in_range():
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    a, b = SimCLRViews(32, strength=0.5)(image)
    assert a.shape == b.shape == (3, 32, 32) and not torch.equal(a, b)
    assert 0 <= float(torch.stack([a, b]).min()) and float(torch.stack([a, b]).max()) <= 1
    torch.manual_seed(1)
    again = SimCLRViews(32, strength=0.5)(image)
    assert torch.equal(again[0], a) and torch.equal(again[1], b)  # seeded by torch's generator, as workers seed it


def test_ablations_switch_off_crop_and_colour():
    """crop=False, color=False: the view is the image; colour alone keeps every pixel's place (a pixel-wise
    map of the image, so an all-constant image stays constant); crop alone keeps the intensities' range."""
    torch.manual_seed(0)
    image = torch.rand(3, 16, 16)
    a, b = SimCLRViews(16, crop=False, color=False)(image)
    assert torch.equal(a, image) and torch.equal(b, image)
    flat = torch.full((3, 16, 16), 0.4)
    for view in SimCLRViews(16, crop=False)(flat):
        assert torch.allclose(view, view[:, :1, :1].expand_as(view))
    grey = torch.rand(1, 28, 28)
    for view in SimCLRViews(28, color=False)(grey):
        assert view.shape == (1, 28, 28) and view.min() >= grey.min() - 1e-6 and view.max() <= grey.max() + 1e-6


def test_two_views_dataset_and_bad_input():
    base = [(torch.rand(784), 3), (torch.rand(784), 7)]
    ds = TwoViews(base, SimCLRViews(28, blur=True), shape=(1, 28, 28))
    (a, b), y = ds[1]
    assert len(ds) == 2 and y == 7 and a.shape == b.shape == (1, 28, 28)
    with pytest.raises(ValueError, match="one float image"):
        SimCLRViews(28)(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match="crop_scale"):
        SimCLRViews(28, crop_scale=(0.5, 0.1))
