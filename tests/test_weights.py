"""ImageNet weights: the three checkpoint layouts (torchvision, CCNet deep stem, mmseg v1c), strict
loading with errors that name the fix, sha256 identity, the digest cache, fetch with a fake download."""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
from pathlib import Path

import pytest
import torch

from ifbf._torchvision import torchvision
from ifbf.commands.cli import main as cli_main
from ifbf.config import BASE_CONFIG, load_config
from ifbf.identity import config_hash, weights_flag_overrides, weights_status
from ifbf.errors import IfbfError
from ifbf.models import build_model
from ifbf.models import weights as W
from ifbf.models.backbone import ResNetBackbone
from ifbf.models.norm import backbone_norm


def _bn(prefix: str, channels: int, tracked: bool = True) -> dict[str, torch.Tensor]:
    out = {f"{prefix}.weight": torch.rand(channels) + 0.5, f"{prefix}.bias": torch.randn(channels),
           f"{prefix}.running_mean": torch.randn(channels), f"{prefix}.running_var": torch.rand(channels) + 0.5}
    if tracked:
        out[f"{prefix}.num_batches_tracked"] = torch.tensor(7)
    return out


def torchvision_state() -> dict[str, torch.Tensor]:
    """torchvision's resnet50 layout (random init, no download), fc included."""
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).state_dict()


def ccnet_state() -> dict[str, torch.Tensor]:
    """CCNet / MIT resnet50-imagenet.pth layout: conv1 3->64 s2, conv2 64->64, conv3 64->128 (3x3), layer1
    takes 128 channels; old-style BN without num_batches_tracked."""
    state = {k: v for k, v in torchvision_state().items() if not k.endswith("num_batches_tracked")}
    for key in [k for k in state if k.startswith("bn1.")]:
        del state[key]
    state["conv1.weight"] = torch.randn(64, 3, 3, 3)
    state["conv2.weight"] = torch.randn(64, 64, 3, 3)
    state["conv3.weight"] = torch.randn(128, 64, 3, 3)
    for prefix, channels in (("bn1", 64), ("bn2", 64), ("bn3", 128)):
        state.update(_bn(prefix, channels, tracked=False))
    state["layer1.0.conv1.weight"] = torch.randn(64, 128, 1, 1)
    state["layer1.0.downsample.0.weight"] = torch.randn(256, 128, 1, 1)
    return state


def v1c_state() -> dict:
    """mmcv's resnet50_v1c layout: stem.0/1, stem.3/4, stem.6/7 (32-32-64), layers as torchvision,
    inside {"meta", "state_dict"}."""
    state = {k: v for k, v in torchvision_state().items() if not k.startswith(("conv1.", "bn1.", "fc."))}
    state["stem.0.weight"] = torch.randn(32, 3, 3, 3)
    state["stem.3.weight"] = torch.randn(32, 32, 3, 3)
    state["stem.6.weight"] = torch.randn(64, 32, 3, 3)
    for prefix, channels in (("stem.1", 32), ("stem.4", 32), ("stem.7", 64)):
        state.update(_bn(prefix, channels))
    return {"meta": {"epoch": 100}, "state_dict": state}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _save(tmp_path, name, state) -> str:
    path = tmp_path / name
    torch.save(state, path)
    return str(path)


def _backbone(stem: str) -> ResNetBackbone:
    return ResNetBackbone("resnet50", backbone_norm("bn"), stem=stem)


@pytest.mark.parametrize("stem, make, probe, source", [
    ("torchvision", torchvision_state, "conv1.weight", "conv1.weight"),
    ("deep", ccnet_state, "conv3.weight", "conv3.weight"),
    ("deep_v1c", v1c_state, "conv3.weight", "stem.6.weight"),
])
def test_each_layout_loads_into_its_stem(tmp_path, stem, make, probe, source):
    state = make()
    path = _save(tmp_path, f"{stem}.pth", state)
    backbone = _backbone(stem)
    W.load_backbone_weights(backbone, path)
    flat = state.get("state_dict", state)
    assert torch.equal(backbone.state_dict()[probe], flat[source])
    assert torch.equal(backbone.layer1[0].conv1.weight, flat["layer1.0.conv1.weight"])
    assert torch.equal(backbone.layer4[2].bn3.running_var, flat["layer4.2.bn3.running_var"])


@pytest.mark.parametrize("stem, make, has", [
    ("deep", torchvision_state, "torchvision's 7x7 stem"),
    ("torchvision", ccnet_state, "a deep stem 64-64-128 (CCNet)"),
    ("deep", v1c_state, "a deep stem 32-32-64 (mmseg v1c)"),
])
def test_other_stem_names_the_right_file_first(tmp_path, stem, make, has):
    """The fix is the file the config asks for; switching model.stem is only named as the deviation it is."""
    path = _save(tmp_path, "w.pth", make())
    with pytest.raises(IfbfError) as err:
        W.load_backbone_weights(_backbone(stem), path)
    message = str(err.value)
    fetch = "`ifbf weights fetch resnet50" + ("`" if stem == "torchvision" else f" --variant {stem}`")
    file_stem = W.inspect_state(W.read_checkpoint(path)).stem
    assert f"does not fit a resnet50 with model.stem={stem}: " in message
    assert f"this file has {has}, model.stem={stem} needs {W.STEM_NAMES[stem]}: give that file ({fetch})" in message
    assert (f"only as a deliberate deviation from the recipe (it changes the run's identity) would "
            f"model.stem={file_stem} use this file") in message
    assert "set model.stem" not in message


def test_unreadable_files_say_what_is_wrong_and_never_weights_only_false(tmp_path):
    full = Path(_save(tmp_path, "full.pth", ccnet_state()))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    text = tmp_path / "text.pth"
    text.write_text("<html>404 Not Found</html>\n")
    objects = _save(tmp_path, "objects.pth", {"model": torch.nn.Linear(2, 2)})
    fetch = "`ifbf weights fetch resnet50 --variant deep`"
    expected = {
        truncated: f"is truncated or damaged ({truncated.stat().st_size} bytes; a torch checkpoint whose end is "
                   f"missing or corrupt): download it again with {fetch} and compare its sha256",
        text: f"is not a torch checkpoint (text, it starts with b'<html>404 Not Found</htm'): download it with {fetch}",
        objects: "holds pickled Python objects (torch.nn.modules.linear.Linear), not only tensors",
    }
    for path, words in expected.items():
        with pytest.raises(IfbfError) as err:
            W.load_backbone_weights(_backbone("deep"), path)
        message = str(err.value)
        assert f"{path} {words}" in message
        assert "weights_only" not in message and "\n" not in message


def test_wrapped_ccnet_file_loads_through_build_model(tmp_path):
    state = ccnet_state()
    path = _save(tmp_path, "ccnet.pth", {"model": {f"module.{k}": v for k, v in state.items()}})
    cfg = load_config(BASE_CONFIG, ["model.norm=bn", "model.backbone=resnet50", "model.stem=deep",
                                    f"model.weights.resnet50_deep={path}"])
    model = build_model(cfg.model)
    assert torch.equal(model.backbone.conv2.weight, state["conv2.weight"])


def test_deep_stem_parameters_by_hand():
    """CCNet's stem: 3x3 convs 3*64 + 64*64 + 64*128 (x9) with 3 BNs, and layer1 reads 128 channels."""
    def count(stem: str) -> int:
        return sum(p.numel() for p in _backbone(stem).parameters())
    torchvision_stem = 64 * 3 * 49 + 2 * 64
    deep_stem = 9 * (3 * 64 + 64 * 64 + 64 * 128) + 2 * (64 + 64 + 128)
    wider_layer1 = 64 * 64 + 256 * 64  # conv1 and downsample read 128 instead of 64 channels
    assert count("deep") - count("torchvision") == deep_stem - torchvision_stem + wider_layer1
    assert sum(p.numel() for p in torchvision.models.resnet50().parameters()) - 2048 * 1000 - 1000 == count("torchvision")


def test_deep_stem_keeps_s1_at_a_quarter():
    """Floor-mode pooling: S1 is H/4 at even sizes (CCNet's ceil mode would give 17 here and not concat with
    the spatial stream), and CCNet's odd crops (8k + 1) give the same size in both modes."""
    with torch.no_grad():
        for stem in ("deep", "deep_v1c"):
            assert _backbone(stem).eval()(torch.randn(1, 3, 64, 64))[0].shape[-2:] == (16, 16)
            assert _backbone(stem).eval()(torch.randn(1, 3, 65, 65))[0].shape[-2:] == (17, 17)
    model = build_model(load_config(BASE_CONFIG, ["model.norm=bn", "model.backbone=resnet18", "model.stem=deep",
                                                  "model.num_classes=3"]).model).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 96))["out"].shape == (1, 3, 64, 96)


def test_first_block_dilation_switch():
    plain = ResNetBackbone("resnet50", backbone_norm("bn"))
    dilated = ResNetBackbone("resnet50", backbone_norm("bn"), dilate_first_block=True)
    reference = torchvision.models.resnet50(replace_stride_with_dilation=[False, False, True])
    assert plain.layer4[0].conv2.dilation == reference.layer4[0].conv2.dilation == (1, 1)
    assert [b.conv2.dilation for b in dilated.layer4] == [(2, 2)] * 3
    assert dilated.layer4[0].conv2.padding == (2, 2) and dilated.layer4[0].conv2.stride == (1, 1)
    basic = ResNetBackbone("resnet18", backbone_norm("bn"), dilate_first_block=True)
    assert basic.layer4[0].conv1.dilation == (2, 2) and basic.layer4[0].conv1.stride == (1, 1)


def test_identity_holds_the_digest_not_the_path(tmp_path):
    a = _save(tmp_path, "a.pth", {"x": torch.ones(3)})
    b = tmp_path / "copy" / "b.pth"  # the same bytes elsewhere (torch.save would embed the file name)
    b.parent.mkdir()
    shutil.copy(a, b)
    c = _save(tmp_path, "c.pth", {"x": torch.zeros(3)})

    def h(*overrides: str) -> str:
        return config_hash(load_config(BASE_CONFIG, list(overrides)))

    assert h(f"model.weights.resnet101={a}") == h(f"model.weights.resnet101={b}")
    assert h(f"model.weights.resnet101={a}") != h(f"model.weights.resnet101={c}")
    assert h(f"model.weights.resnet101={a}") != h()
    assert h("model.weights.resnet101=none") == h()  # explicit from-scratch trains the same thing
    # only the row's own backbone + stem counts
    assert h(f"model.weights.resnet50={c}", f"model.weights.resnet101={a}") == h(f"model.weights.resnet101={a}")
    assert h("model.stem=deep", f"model.weights.resnet101={a}") == h("model.stem=deep")


def test_weights_record_for_env_json(tmp_path):
    a = _save(tmp_path, "a.pth", {"x": torch.ones(3)})
    model = load_config(BASE_CONFIG, ["model.backbone=resnet50", f"model.weights.resnet50={a}"]).model
    assert W.weights_record(model) == {"key": "model.weights.resnet50", "path": a,
                                       "sha256": hashlib.sha256(open(a, "rb").read()).hexdigest()}
    assert W.weights_record(load_config(BASE_CONFIG).model)["sha256"] is None


def test_weights_status_tells_scratch_from_missing():
    def status(*overrides: str) -> str:
        return weights_status(load_config(BASE_CONFIG, list(overrides)).model)

    assert status() == "missing" and status("model.weights.resnet101=none") == "scratch"
    assert status("model.weights.resnet101=/x.pth") == "file" and status("model.weights.resnet50=none") == "missing"
    assert status("model.stem=deep", "model.weights.resnet101_deep=None") == "scratch"


def test_weights_flag_becomes_overrides():
    assert weights_flag_overrides(["resnet101=/w/a.pth", "resnet50_deep=none"]) == [
        "model.weights.resnet101=/w/a.pth", "model.weights.resnet50_deep=none"]
    with pytest.raises(IfbfError, match="--weights 'resnet152=/x': expected KEY=PATH or KEY=none with KEY one of resnet18"):
        weights_flag_overrides(["resnet152=/x"])


def test_missing_weights_file_fails_the_hash():
    with pytest.raises(IfbfError, match=r"model.weights.resnet101_deep: file not found: /no/w.pth .*"
                                        r"ifbf weights fetch resnet101 --variant deep"):
        config_hash(load_config(BASE_CONFIG, ["model.stem=deep", "model.weights.resnet101_deep=/no/w.pth"]))


def test_digest_is_cached_by_size_and_mtime(tmp_path, monkeypatch):
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc")
    assert W.file_digest(path) == hashlib.sha256(b"abc").hexdigest()
    calls = []
    real = W.file_digest.__globals__["sha256_of"]
    monkeypatch.setitem(W.file_digest.__globals__, "sha256_of", lambda p: calls.append(p) or real(p))
    assert W.file_digest(path) == hashlib.sha256(b"abc").hexdigest() and calls == []
    path.write_bytes(b"abcd")
    assert W.file_digest(path) == hashlib.sha256(b"abcd").hexdigest() and len(calls) == 1


def test_fetch_downloads_into_the_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    seen = []

    def fake_download(url: str, dst: str, progress: bool = True) -> None:
        seen.append(url)
        torch.save(torchvision_state(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path, digest = W.fetch_weights("resnet50", "IMAGENET1K_V1")
    assert seen == [torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url]
    assert path == tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    W.fetch_weights("resnet50", "IMAGENET1K_V1")
    assert len(seen) == 1  # already there: no second download


def test_fetch_without_network_names_the_url(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url: str, dst: str, progress: bool = True) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    url = torchvision.models.ResNet101_Weights.IMAGENET1K_V1.url
    with pytest.raises(IfbfError, match=rf"cannot download {url} .*fetch it by hand and save it as .*hub/checkpoints"):
        W.fetch_weights("resnet101")
    with pytest.raises(IfbfError, match="unknown variant 'V9' for resnet50"):
        W.fetch_weights("resnet50", "V9")


def test_describe_names_layout_digest_and_fit(tmp_path):
    path = _save(tmp_path, "ccnet.pth", ccnet_state())
    text = W.describe_weights(path, backbone="resnet50")
    assert "resnet50 with a deep stem 64-64-128 (CCNet)" in text
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() in text
    assert f"model.weights.resnet50_deep={tmp_path / 'ccnet.pth'}" in text
    assert "loads:    yes, into resnet50 with model.stem=deep" in text
    assert "loads:    NO" in W.describe_weights(path, backbone="resnet101")


def test_cli_check_and_fetch(tmp_path, monkeypatch, capsys):
    path = _save(tmp_path, "tv.pth", torchvision_state())
    assert cli_main(["weights", "check", path, "--backbone", "resnet50"]) == 0
    assert "loads:    yes, into resnet50 with model.stem=torchvision" in capsys.readouterr().out
    assert cli_main(["weights", "check", path, "--backbone", "resnet50", "--stem", "deep"]) == 2
    assert "give that file (`ifbf weights fetch resnet50 --variant deep`)" in capsys.readouterr().out

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, progress=True: shutil.copy(path, dst))
    assert cli_main(["weights", "fetch", "resnet101", "--variant", "deep"]) == 0
    out = capsys.readouterr().out
    assert "use:    --weights resnet101_deep=" in out and str(tmp_path / "hub" / "checkpoints") in out  # as README
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() in out
