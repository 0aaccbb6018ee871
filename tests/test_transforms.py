import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from udml_cli.config import DataConfig
from udml_cli.data.transforms import eval_transform, train_transform


def _image(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_eval_transform_matches_torchvision_resize_centre_crop():
    cfg = DataConfig(image_size=32, resize=40)
    reference = v2.Compose([v2.PILToTensor(), v2.Resize(40, antialias=True), v2.CenterCrop(32),
                            v2.ToDtype(torch.float32, scale=True)])  # fmt: skip
    for w, h in [(80, 60), (40, 40), (30, 70), (200, 41)]:
        im = _image(w, h)
        ours, ref = eval_transform(cfg)(im), reference(im)
        assert ours.shape == ref.shape == (3, 32, 32)
        assert ours.dtype == torch.float32 and ours.min() >= 0 and ours.max() <= 1
        assert (ours - ref).abs().mean() < 0.03  # same geometry, resampling filters differ slightly


def test_train_transform_is_seeded():
    cfg = DataConfig(image_size=16, resize=20)
    im = _image(50, 40)
    torch.manual_seed(3)
    a = train_transform(cfg)(im)
    torch.manual_seed(3)
    b = train_transform(cfg)(im)
    torch.manual_seed(4)
    c = train_transform(cfg)(im)
    assert a.shape == (3, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
