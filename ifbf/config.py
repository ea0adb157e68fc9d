"""Strict configs: YAML files and dotted overrides loaded onto frozen dataclasses.

The defaults below are the paper's recipe (section 4.1, see docs/paper-notes.md); experiments/ifbfnet/base.yaml
spells every one of them out so the recipe can be read in one place (a test keeps the two equal).
Unknown keys, wrong types, NaN or infinite numbers and values outside a field's choices or range
(``ifbf.limits``) raise one ``ConfigError`` naming the key, the bound and where it came from (file or override).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from ifbf.errors import ConfigError, UnreadSwitch
from ifbf.limits import problem

Backbone = Literal["resnet18", "resnet34", "resnet50", "resnet101"]
Norm = Literal["bn", "syncbn", "inplace_abn", "inplace_abn_sync"]
FusionPlacement = Literal["concat", "after_convs"]
Ohem = Literal["none", "thresh", "topk"]
Amp = Literal["none", "off", "bf16", "fp16"]  # "off" = "none"
Dataset = Literal["cityscapes", "synthetic"]
Arch = Literal["ifbfnet", "deeplabv3plus", "danet"]
OutputStride = Literal[8, 16]
CamEnergy = Literal["negated", "direct"]
Stem = Literal["torchvision", "deep", "deep_v1c"]

PAPER_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)  # section 4.3.4, "DA"
PAPER_MS_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # section 4.3.4, "MS"


@dataclass(frozen=True)
class WeightsConfig:
    """ImageNet weights per backbone and stem (ifbf.models.weights): a file path, ``none`` (train from
    scratch on purpose) or null (not given). Keys: the backbone, plus ``_deep`` / ``_deep_v1c`` for
    the deep stems. Only the file of a run's own backbone + stem enters its identity, as a sha256."""

    resnet18: str | None = None
    resnet34: str | None = None
    resnet50: str | None = None
    resnet101: str | None = None
    resnet18_deep: str | None = None
    resnet34_deep: str | None = None
    resnet50_deep: str | None = None
    resnet101_deep: str | None = None
    resnet18_deep_v1c: str | None = None
    resnet34_deep_v1c: str | None = None
    resnet50_deep_v1c: str | None = None
    resnet101_deep_v1c: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    """Architecture switches (section 3; every ablation of Tables 2, 3 and 5)."""

    arch: Arch = "ifbfnet"  # deeplabv3plus: the comparison model of Tables 1 and 6
    backbone: Backbone = "resnet101"
    stem: Stem = "torchvision"  # deep: CCNet's 3x3 convs 64-64-128; deep_v1c: mmseg's 32-32-64
    dilate_first_block: bool = False  # true: every block of the dilated stage 4 dilated (CCNet, mmseg)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    aspp: bool = True
    aspp_rates: tuple[int, ...] = (6, 12, 18)
    aspp_1x1_branch: bool = False  # DeepLabV3 has one; the paper's section 4.3.1 does not
    reduce_without_aspp: bool = True  # keep the 2048 -> 256 reduction in the no-ASPP rows
    skip: bool = True
    balanced_fusion: bool = True
    fusion_placement: FusionPlacement = "concat"
    spatial_stream: bool = True
    spatial_channels: int = 128
    aux_head: bool = True
    num_classes: int = 19
    norm: Norm = "inplace_abn_sync"
    # the dilated ResNet (every arch) and DANet's head (arch danet: docs/danet-reading.md)
    output_stride: OutputStride = 16  # 8: stages 3 and 4 dilated (2, 4), as DANet
    multi_grid: tuple[int, ...] | None = None  # dilations of stage 4's blocks, cycled (DANet: 4, 8, 16)
    pam: bool = True  # danet: the position attention module
    cam: bool = True  # danet: the channel attention module
    pam_reduction: int = 8  # danet: PAM's query/key channels = C / this (the authors' code; the paper: 1)
    cam_energy: CamEnergy = "negated"  # danet: softmax over -A.A^T (the authors' code) or A.A^T (eq. 3)
    branch_heads: bool = True  # danet, both modules on: a classifier per branch, auxiliary losses (code)


_BACKBONE_FIELDS = frozenset({"arch", "backbone", "stem", "dilate_first_block", "weights", "norm", "num_classes",
                              "output_stride", "multi_grid"})  # models.weights.build_backbone reads the last two
# Which ModelConfig fields each ``model.arch`` reads (its builder in ifbf/models); any other field is refused unless
# at its default (it would change the run's hash, not the model). A new switch joins every arch that builds it.
ARCH_FIELDS: dict[str, frozenset[str]] = {
    "ifbfnet": _BACKBONE_FIELDS | {"aux_head", "aspp", "aspp_rates", "aspp_1x1_branch", "reduce_without_aspp", "skip",
                                   "balanced_fusion", "fusion_placement", "spatial_stream", "spatial_channels"},
    "deeplabv3plus": _BACKBONE_FIELDS | {"aux_head", "aspp_rates"},  # its ASPP is always on, with the 1x1 branch
    "danet": _BACKBONE_FIELDS | {"pam", "cam", "pam_reduction", "cam_energy", "branch_heads"},  # docs/danet-reading.md
}


def _check_arch(model: ModelConfig, where: str, prefix: str) -> None:
    """A switch the architecture ignores, set away from its default: refused (one line: field, arch, fix)."""
    default = ModelConfig()
    for f in dataclasses.fields(model):
        value = getattr(model, f.name)
        if f.name not in ARCH_FIELDS[model.arch] and value != getattr(default, f.name):
            readers = tuple(a for a, read in ARCH_FIELDS.items() if f.name in read)
            shown = json.dumps(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value)
            raise UnreadSwitch(f"{where}: {prefix}{f.name}={shown}: {prefix}arch={model.arch} does not read it; "
                               f"drop the override or use {' or '.join(f'{prefix}arch={a}' for a in readers)}", readers)


@dataclass(frozen=True)
class SynthConfig:
    """Size of the embedded synthetic Cityscapes-layout dataset (used when data.dataset=synthetic)."""

    train: int = 48
    val: int = 12
    test: int = 4
    height: int = 128
    width: int = 256
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    """Dataset and training-time augmentation (section 4.1)."""

    dataset: Dataset = "cityscapes"
    root: str | None = None  # None: $CITYSCAPES_DATASET (or the synthetic cache)
    train_splits: tuple[str, ...] = ("train",)  # concatenated; the paper trains on train (paper-notes)
    val_split: str = "val"
    crop_size: tuple[int, int] = (876, 876)  # (H, W)
    scales: tuple[float, ...] = PAPER_SCALES  # (1.0,) switches "DA" off (Table 4)
    hflip: bool = True
    batch_size: int = 4  # per process; the paper does not say (docs/paper-notes.md)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    synth: SynthConfig = field(default_factory=SynthConfig)
    # Input fast path (docs/performance.md): decoded cache when present, uint8 batches normalised on the
    # device. Bitwise the same batches as the default path, so not part of a run's identity.
    fast_path: bool = False
    cache_dir: str | None = None  # None: <root>/ifbf_cache (written by `ifbf data cache ROOT`)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and loss (sections 3.4 and 4.1)."""

    iters: int = 81_000
    warmup_iters: int = 1_000
    lr: float = 0.01
    lr_mult: float = 10.0  # aux head and fusion modules
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    ohem: Ohem = "thresh"
    ohem_thresh: float = 0.7
    ohem_min_kept: int = 100_000
    ohem_keep_ratio: float = 0.75
    aux_weight: float = 0.4
    aux_ohem: bool = True  # false: plain CE on the aux head, OHEM on the main output only (CCNet code)
    amp: Amp = "none"
    channels_last: bool = False
    compile: bool = False  # torch.compile the model (an execution detail, like the device: not identity)
    seed: int = 0
    deterministic: bool = False
    float64: bool = False  # verification mode: train and evaluate in double precision (CPU, slow)


@dataclass(frozen=True)
class EvalConfig:
    """Inference settings; not part of a run's identity (they reuse a trained checkpoint)."""

    scales: tuple[float, ...] = PAPER_MS_SCALES  # "MS" in Tables 2-5; (1.0,) = single scale
    flip: bool = False  # the paper flips on the test set only (docs/paper-notes.md)
    window: tuple[int, int] | None = None  # sliding-window crop (H, W); None = whole image
    split: str | None = None  # None: data.val_split (Table 6 evaluates "test")


@dataclass(frozen=True)
class RuntimeConfig:
    """How a run executes; never changes its result, so not part of its identity."""

    workers: int = 4
    log_every: int = 20
    ckpt_every: int = 1_000
    device: str = "auto"  # auto | cpu | cuda
    lock_stale_s: float = 300.0  # a run's lock whose heartbeat is older than this is broken (see ifbf.store.runlock)
    val_every: int = 0  # curves: a quick single-scale validation every N iterations (0 = off)
    val_images: int = 50  # the fixed subset it uses: the first N images of the val split
    tensorboard: bool = False  # also write TensorBoard event files (run_dir/tensorboard), if installed


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


BASE_CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "ifbfnet" / "base.yaml"

# Keys that no longer exist -> what to write instead.
# keys that never had an effect: read from the config.yaml of older runs and dropped
RETIRED = frozenset({"eval.batch_size"})
RENAMED = {"model.pretrained": "model.weights.<backbone>=PATH, e.g. model.weights.resnet101=/data/resnet101.pth"}


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in canonical form."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        inner = [t for t in options if t is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return value
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            if not value:
                raise ConfigError(f"{where}: expected a non-empty list")
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        number = float(value) if isinstance(value, float) or abs(value) < 2**1000 else math.inf
        if not math.isfinite(number):  # .nan, .inf: no setting means them
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r}")  # a bug in this module, not user input


def _build(cls: type, data: Any, where: str, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key and value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'top level'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    data = {k: v for k, v in data.items() if f"{prefix}{k}" not in RETIRED}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if f"{prefix}{unknown[0] if unknown else ''}" in RENAMED:
        raise ConfigError(f"{where}: '{prefix}{unknown[0]}' is gone: use {RENAMED[prefix + unknown[0]]}")
    if unknown:
        raise ConfigError(
            f"{where}: unknown key '{prefix}{unknown[0]}' (known keys here: {', '.join(sorted(names))})"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, where, key + ".")
        else:
            kwargs[name] = _coerce(value, tp, f"{where}: {key}")
    obj = cls(**kwargs)
    _validate(obj, where, prefix)
    return obj


def _validate(obj: Any, where: str, prefix: str) -> None:
    """Range checks that types alone cannot express: each numeric field against its range in ``ifbf.limits``."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if (wrong := problem(prefix + f.name, value)) is not None:
            raise ConfigError(f"{where}: {prefix}{f.name}: {wrong}, got {_shown(value)}")
    if isinstance(obj, ModelConfig):
        _check_arch(obj, where, prefix)
    if isinstance(obj, DataConfig) and len(set(obj.train_splits)) != len(obj.train_splits):
        raise ConfigError(f"{where}: {prefix}train_splits: must not repeat a split, got {obj.train_splits!r}")


def _shown(value: Any) -> str:
    """A value as the user wrote it: lists as lists."""
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.spatial_channels=64"`` -> (["model", "spatial_channels"], 64); values are YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. train.iters=200")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err.problem})") from None
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of the nested mapping ``data`` with dotted overrides applied."""
    data = json.loads(json.dumps(data))  # deep copy of plain YAML data
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, data, train, ...)")
    return data


def from_dict(data: dict, where: str = "config") -> Config:
    return _build(Config, _upgrade(data), where)


def _upgrade(data: dict) -> dict:
    """Read configs written by earlier versions (run directories keep theirs): ``data.train_split: X``
    became ``data.train_splits: [X]``; ``model.pretrained: null`` is the default of ``model.weights``
    (a path there is refused with the new key's name, see RENAMED)."""
    if not isinstance(data, dict):
        return data
    section = data.get("data")
    if isinstance(section, dict) and "train_split" in section and "train_splits" not in section:
        section = {**section, "train_splits": [section["train_split"]]}
        del section["train_split"]
        data = {**data, "data": section}
    model = data.get("model")
    if isinstance(model, dict) and "pretrained" in model and model["pretrained"] is None:
        data = {**data, "model": {k: v for k, v in model.items() if k != "pretrained"}}
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply dotted overrides.

    Errors from the file name the file; errors from an override name the override.
    """
    where = str(path) if path is not None else "defaults"
    data = read_yaml(path) if path is not None else {}
    cfg = from_dict(data, where)
    for text in overrides:  # one at a time, so an error names the override that caused it
        cfg = from_dict(apply_overrides(to_dict(cfg), [text]), f"override {text!r}")
    if cfg.train.warmup_iters >= cfg.train.iters:  # the one check across keys, once all are applied
        source = f"{where} + overrides" if overrides else where
        raise ConfigError(
            f"{source}: train.warmup_iters ({cfg.train.warmup_iters}) must be < train.iters ({cfg.train.iters})"
        )
    return cfg


def to_dict(cfg: Any) -> dict:
    """Plain nested dict (tuples as lists), suitable for YAML and JSON."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
