"""C6 data pieces: packing clips and images with a frame mask, resolution buckets (each item once per epoch, one
shape per batch, reproducible), progressive stages."""

import pytest
import torch

from minivid.data import ProgressiveStages, ResolutionBuckets, Stage, pack_clips


def test_pack_clips_pads_at_the_end_and_marks_real_frames():
    a, b, img = torch.randn(3, 2, 4, 4), torch.randn(3, 5, 4, 4), torch.randn(3, 4, 4)
    x, mask = pack_clips([a, b, img])
    assert x.shape == (3, 3, 5, 4, 4) and mask.tolist() == [[1, 1, 0, 0, 0], [1] * 5, [1, 0, 0, 0, 0]]
    assert torch.equal(x[0, :, :2], a) and torch.equal(x[1], b) and torch.equal(x[2, :, 0], img)
    assert not x[0, :, 2:].any() and not x[2, :, 1:].any()
    x8, mask8 = pack_clips([a], num_frames=8)
    assert x8.shape[2] == 8 and mask8.sum().item() == 2


def test_pack_clips_errors():
    with pytest.raises(ValueError, match="non-empty list"):
        pack_clips([])
    with pytest.raises(ValueError, match=r"clips\[1\] has channels x size"):
        pack_clips([torch.randn(3, 2, 4, 4), torch.randn(3, 2, 8, 8)])
    with pytest.raises(ValueError, match=r"clips\[0\] must be a \(C, T, H, W\) clip"):
        pack_clips([torch.randn(4, 4)])
    with pytest.raises(ValueError, match="num_frames=3 is invalid"):
        pack_clips([torch.randn(3, 5, 4, 4)], num_frames=3)


def test_resolution_buckets_cover_every_item_once_in_batches_of_one_shape():
    keys = [(8, 32, 32)] * 10 + [(1, 32, 32)] * 7 + [(8, 16, 16)] * 5
    s = ResolutionBuckets(keys, batch_size=4, seed=3)
    batches = s.batches()
    assert len(batches) == len(s) == 3 + 2 + 2
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(keys)))
    assert all(len({keys[i] for i in b}) == 1 and 1 <= len(b) <= 4 for b in batches)
    assert s.batches() == batches  # reproducible
    s.set_epoch(1)
    assert s.batches() != batches and sorted(i for b in s.batches() for i in b) == sorted(flat)
    d = ResolutionBuckets(keys, batch_size=4, drop_last=True)
    assert len(d) == len(d.batches()) == 2 + 1 + 1 and all(len(b) == 4 for b in d)
    with pytest.raises(ValueError, match="batch_size=0 is invalid"):
        ResolutionBuckets(keys, 0)


def test_progressive_stages():
    p = ProgressiveStages([Stage(10, 16, 8), Stage(5, 32, 8), Stage(1, 32, 16)])
    assert p.total_steps == 16 and len(p) == 3
    assert [p.at(s) for s in (0, 9, 10, 14, 15)] == [0, 0, 1, 1, 2]
    with pytest.raises(ValueError, match="step=16 is invalid"):
        p.at(16)
    with pytest.raises(ValueError, match="never lowers the resolution"):
        ProgressiveStages([Stage(1, 32, 8), Stage(1, 16, 8)])
    with pytest.raises(ValueError, match="size=0 is invalid"):
        Stage(1, 0, 8)
    with pytest.raises(ValueError, match="non-empty list of Stage"):
        ProgressiveStages([(1, 16, 8)])
