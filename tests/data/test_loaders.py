"""Deterministic, resumable loaders and on-device augmentation."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from beyondkd.data import Augment, DatasetInfo, DatasetLoader, TensorImages, TensorLoader, epoch_permutation

INFO = DatasetInfo("toy", 3, 1, 8, (0.5,), (0.25,))


def _toy(n=50):
    g = torch.Generator().manual_seed(0)
    return TensorImages(torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8), torch.arange(n) % 3, INFO)


def test_epoch_order_is_a_seeded_permutation():
    a, b = epoch_permutation(100, 0, 3), epoch_permutation(100, 0, 3)
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(100))
    assert not torch.equal(a, epoch_permutation(100, 0, 4))


def test_train_loader_drops_last_and_val_keeps_all():
    data = _toy(50)
    train = TensorLoader(data, 16, train=True, seed=1)
    val = TensorLoader(data, 16, train=False)
    assert len(train) == 3 and sum(len(b) for b in train) == 48
    assert len(val) == 4 and torch.equal(torch.cat([b.indices for b in val]), torch.arange(50))


def test_normalisation():
    data = _toy(4)
    b = next(iter(TensorLoader(data, 4, train=False)))
    assert torch.allclose(b.images, (data.images.float() / 255 - 0.5) / 0.25)


def test_resume_mid_epoch_gives_the_same_batches():
    data = _toy(64)
    loader = TensorLoader(data, 8, train=True, augment=Augment(2, True), seed=7)
    loader.set_epoch(2)
    full = list(loader)
    loader.set_epoch(2, skip_batches=5)
    rest = list(loader)
    assert len(rest) == len(full) - 5
    for a, b in zip(full[5:], rest):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.images, b.images)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 3), st.booleans())
def test_augment_is_a_shifted_possibly_flipped_crop(pad, flip):
    g = torch.Generator().manual_seed(pad)
    x = torch.rand(6, 2, 8, 8, generator=g) + 0.1  # strictly positive: padding shows as zeros
    out = Augment(pad, flip)(x, torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    for i in range(6):
        candidates = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
        candidates += [c.flip(-1) for c in candidates] if flip else []
        assert any(torch.equal(out[i], c) for c in candidates)


def test_subset_is_seeded():
    data = _toy(50)
    a, b = data.subset(10, seed=3), data.subset(10, seed=3)
    assert torch.equal(a.images, b.images) and len(a) == 10
    assert data.subset(None, seed=0) is data


class _Pairs(torch.utils.data.Dataset):
    def __len__(self):
        return 20

    def __getitem__(self, i):
        return torch.full((1, 4, 4), float(i)), i % 2


def test_dataset_loader_order_and_resume():
    loader = DatasetLoader(_Pairs(), INFO, 4, train=True, seed=5)
    loader.set_epoch(1)
    full = [b.indices.tolist() for b in loader]
    loader.set_epoch(1, skip_batches=2)
    rest = [b.indices.tolist() for b in loader]
    assert rest == full[2:]
    assert sorted(sum(full, [])) == list(range(20))
    b = next(iter(loader))
    assert torch.equal(b.images[:, 0, 0, 0], b.indices.float())
