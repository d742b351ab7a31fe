"""Image classification: torchvision models, Hugging Face image classifiers, or any ``nn.Module`` that
returns logits (``mmcam.loading.load_classifier`` turns a model SPEC into one)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from mmcam.adapters.hub import WrongCheckpoint, load_local, model_name
from mmcam.adapters.tokens import PRE_ATTENTION_NORMS
from mmcam.engine import Explainer, Layout
from mmcam.explanation import Explanation
from mmcam.subject import Subject
from mmcam.targets import TopClass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)  # torchvision's video classifiers' normalization
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclass
class ImageClassifier:
    """A classifier ready to explain: the network, how images become its input, its class names,
    and the layer and method explained by default. ``multi_label``: classes are independent (a sigmoid
    per logit, as in a multi-label classifier), not exclusive (a softmax over the logits). ``video``: it
    reads clips, ``preprocess`` takes lists of frames and gives (B, 3, T, H, W)."""

    name: str
    model: nn.Module
    preprocess: Callable[[Sequence[Image.Image]], Tensor]
    class_names: Sequence[str] | None = None
    layer: str = "auto"
    layout: str | Layout = "auto"
    multi_label: bool = False
    video: bool = False
    method: str = "gradcam"

    def explainer(self, layer: str | None = None, method: str | None = None, **options) -> Explainer:
        """An explainer of this classifier's layer and method (defaults: its own); ``options`` go to
        ``Explainer`` (``eigen_smooth``, ``aug_smooth``, ...)."""
        return Explainer(
            self.model,
            layer=layer or self.layer,
            method=method or self.method,
            layout=self.layout,
            class_names=self.class_names,
            **options,
        )

    def subject(self, layer: str | None = None) -> Subject:
        """This classifier's layer as a subject for naming its units (``mmcam.concepts``)."""
        return Subject(self.name, self.model, layer or self.layer, self.preprocess, layout=self.layout)

    def class_index(self, name_or_index: str) -> int:
        """A class given by its name (any case) or its output number, as ``--class`` takes it."""
        names = [str(name).casefold() for name in self.class_names or []]
        if name_or_index.strip().casefold() in names:
            return names.index(name_or_index.strip().casefold())
        if name_or_index.strip().isdigit():
            return int(name_or_index)
        shown = (
            ", ".join(map(str, (self.class_names or [])[:20]))
            or "this model has no class names: give a number"
        )
        raise ValueError(f"'{name_or_index}' is not a class of {self.name}; its classes: {shown}")

    def explain(
        self, images: Sequence[Image.Image], top: int = 1, layer: str | None = None, method: str | None = None
    ) -> Explanation:
        """Explain the ``top`` highest-scoring classes of each image, chosen in the same forward that
        explains them (on the model's device; the explanation comes back on the CPU)."""
        return self.explainer(layer, method)(self.preprocess(images), top_targets(top)).cpu()


def top_targets(top: int) -> list[TopClass]:
    """The ``top`` best classes of each sample, best first, as targets (``TopClass``)."""
    if top < 1:
        raise ValueError("--top must be at least 1")
    return [TopClass(rank) for rank in range(top)]


def class_names_of(model: nn.Module) -> list[str] | None:
    """Class names a model carries: ``model.labels`` (bundled) or a Hugging Face ``config.id2label``."""
    if getattr(model, "labels", None) is not None:
        return list(model.labels)
    id2label = getattr(getattr(model, "config", None), "id2label", None)
    if id2label:
        return [id2label[i] for i in sorted(id2label)]
    return None


def default_layer_and_method(model: nn.Module) -> tuple[str, str]:
    """The layer and method explained by default for a model family.

    Bundled models name their layer (``default_layer``), with Grad-CAM. A plain ViT-style transformer (one
    stack of blocks over the same tokens, its classes read from the class token): attention relevance
    from the first block's pre-attention norm, which on a ViT classifier trained on the shapes world (F1
    0.94) pointed 0.487, against 0.414 for Grad-CAM at the last block, the best CAM of 4 blocks x 7
    methods (docs/families.md, "Maps on trained standard architectures"). A hierarchical transformer (Swin:
    stages that merge tokens, windowed attention) keeps Grad-CAM at its last block's pre-attention norm, whose
    patch tokens still feed the output through attention (the final norm's gradient reaches only the
    class token, where there is one); everything else: ``"auto"`` with Grad-CAM.
    """
    if isinstance(getattr(model, "default_layer", None), str):
        return model.default_layer, "gradcam"
    norms = [name for name, _ in model.named_modules() if name.split(".")[-1] in PRE_ATTENTION_NORMS]
    if not norms:
        return "auto", "gradcam"
    if _block_stack(norms[0]) == _block_stack(norms[-1]):
        return norms[0], "attention-relevance"
    return norms[-1], "gradcam"


def _block_stack(norm: str) -> str:
    """The container of blocks a pre-attention norm sits in: ``vit.layers`` for ``vit.layers.3.layernorm_before``."""
    return norm.rsplit(".", 2)[0]


def from_module(
    model: nn.Module, preprocess: Callable | None = None, name: str | None = None
) -> ImageClassifier:
    """Wrap any ``nn.Module`` returning logits; ``preprocess`` defaults to ImageNet's 224x224."""
    layer, method = default_layer_and_method(model)
    return ImageClassifier(
        name=name or type(model).__name__,
        model=model.eval(),
        preprocess=preprocess or imagenet_preprocess(224),
        class_names=class_names_of(model),
        layer=layer,
        method=method,
    )


def imagenet_preprocess(
    size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> Callable[[Sequence[Image.Image]], Tensor]:
    """Resize to size x size (no crop, so maps cover the whole image) and normalize with ``mean`` and
    ``std`` (ImageNet's statistics by default): x = (p / 255 - mean) / std for pixel values p, computed as
    one multiply-add p * (1 / (255 std)) - mean / std over the batch. Each image's resized pixels are copied
    once, into the batch's (B, H, W, RGB) bytes, which are normalized as (B, RGB, H, W) floats: 0.73 ->
    0.65 ms an image of 256 px on the 2-core CPU, most of it PIL's resizing (2026-12-06)."""
    scale = (1 / (255 * torch.tensor(std)))[:, None, None]
    shift = (-torch.tensor(mean) / torch.tensor(std))[:, None, None]

    def preprocess(images: Sequence[Image.Image]) -> Tensor:
        pixels = torch.empty(len(images), size, size, 3, dtype=torch.uint8)
        for row, image in zip(pixels.numpy(), images):
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            row[...] = np.asarray(rgb.resize((size, size), Image.BILINEAR))
        channels = pixels.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
        return torch.addcmul(shift, channels, scale)

    return preprocess


def from_torchvision(spec: str, trust_pickle: bool = False) -> ImageClassifier:
    """``NAME`` (pretrained weights from the local torch cache), ``NAME:random`` (random weights) or
    ``NAME:DIR``: a checkpoint of your own, ``DIR/model.safetensors`` (the model's state dict, loaded
    without unpickling; or shards listed in ``model.safetensors.index.json``) and ``DIR/config.json``
    with ``num_classes`` and optionally ``labels``, ``image_size``, ``mean``, ``std`` (default ImageNet's,
    224) and ``multi_label``. Cached pretrained weights are unpickled only if they hold tensors alone, or
    with ``trust_pickle``."""
    import torchvision

    name, _, variant = spec.partition(":")
    if name in torchvision.models.list_models(module=torchvision.models.video):
        return _torchvision_video(name, variant, trust_pickle)
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ValueError(
            f"unknown model '{spec}': use 'shapes', a torchvision name (e.g. resnet50), or hf:<id or local dir>"
        )
    if variant not in ("", "random"):
        return _torchvision_checkpoint(name, Path(variant))
    weights = None if variant == "random" else _cached_weights(name, trust_pickle)
    model = torchvision.models.get_model(name, weights=weights)
    names = list(weights.meta["categories"]) if weights is not None else None
    classifier = from_module(model, name=f"torchvision:{spec}")
    classifier.class_names = names
    return classifier


def _cached_weights(name: str, trust_pickle: bool = False):
    """torchvision's default pretrained weights of ``name``, if they are in the local torch cache; they are
    never downloaded (torchvision would try, and print the address on stdout). torchvision unpickles the
    cached file with ``weights_only=False``, which runs any code a crafted file holds: unless
    ``trust_pickle``, the file is first read with ``weights_only=True`` and refused if it holds anything but
    tensors and plain values."""
    import pickle

    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file():
        raise ValueError(
            f"the pretrained weights of {name} are not in the local torch cache ({cached}); copy them there, "
            f"or use torchvision:{name}:random"
        )
    if not trust_pickle:
        try:
            torch.load(cached, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
            raise ValueError(
                f"the cached weights {cached} hold more than tensors ({str(error).splitlines()[0][:120]}): "
                "unpickling them can run code; pass --trust-pickle (trust_pickle=True) if you trust the file, "
                "or delete it and copy torchvision's own file there"
            ) from error
    return weights


def _torchvision_video(name: str, variant: str, trust_pickle: bool = False) -> ImageClassifier:
    """A torchvision video classifier (Kinetics-400): pretrained from the local torch cache, or random.
    It reads clips: ``preprocess`` takes lists of frames and gives (B, 3, T, H, W)."""
    import torchvision

    if variant not in ("", "random"):
        raise ValueError(
            f"unknown variant '{variant}' of {name}: use torchvision:{name} or torchvision:{name}:random"
        )
    weights = None if variant == "random" else _cached_weights(name, trust_pickle)
    model = torchvision.models.get_model(name, weights=weights)
    frames = imagenet_preprocess(112, KINETICS_MEAN, KINETICS_STD)

    def preprocess(clips: Sequence[Sequence[Image.Image]]) -> Tensor:
        return torch.stack([frames(list(clip)).transpose(0, 1) for clip in clips])  # (B, 3, T, H, W)

    names = list(weights.meta["categories"]) if weights is not None else None
    return ImageClassifier(f"torchvision:{name}", model.eval(), preprocess, names, "auto", video=True)


SHARD_INDEX = "model.safetensors.index.json"  # Hugging Face's name for a sharded checkpoint's index


def read_state_dict(folder: Path) -> dict[str, Tensor]:
    """The state dict in ``folder``: ``model.safetensors``, or the shards that ``SHARD_INDEX`` lists (as
    ``huggingface_hub.save_torch_state_dict`` writes them); never unpickled."""
    from safetensors.torch import load_file

    index = folder / SHARD_INDEX
    if not index.is_file():
        return load_file(folder / "model.safetensors")
    state: dict[str, Tensor] = {}
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
        state.update(load_file(folder / shard))
    return state


def require_matching(expected: dict[str, Tensor], state: dict[str, Tensor], what: str) -> None:
    """Refuse, in one line that starts with ``what``, a state dict whose keys or shapes differ from the
    model's (``expected``): how many weights are missing, unexpected or of another shape, with one of each."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(key for key in set(expected) & set(state) if expected[key].shape != state[key].shape)
    parts = [f"{len(missing)} of its weights missing ({missing[0]}, ...)"] if missing else []
    parts += [f"{len(unexpected)} unexpected ({unexpected[0]}, ...)"] if unexpected else []
    parts += [
        f"{len(reshaped)} of another shape ({key}: {tuple(state[key].shape)} in the file, "
        f"{tuple(expected[key].shape)} in the model, ...)"
        for key in reshaped[:1]
    ]
    if parts:
        raise ValueError(f"{what}: {'; '.join(parts)}")


def _torchvision_checkpoint(name: str, folder: Path) -> ImageClassifier:
    """torchvision's ``name`` with the weights and settings of ``folder`` (see ``from_torchvision``)."""
    import torchvision

    settings = folder / "config.json"
    weights = [folder / "model.safetensors", folder / SHARD_INDEX]
    if not (any(w.is_file() for w in weights) and settings.is_file()):
        raise ValueError(
            f"torchvision:{name}:{folder} needs a folder with model.safetensors and config.json (or shards "
            f"listed in {SHARD_INDEX}); use torchvision:{name} (pretrained) or torchvision:{name}:random"
        )
    from safetensors import SafetensorError

    config = json.loads(settings.read_text())
    model = torchvision.models.get_model(name, weights=None, num_classes=config["num_classes"])
    try:
        state = read_state_dict(folder)
    except SafetensorError as error:
        raise ValueError(
            f"the weights in {folder} cannot be read ({str(error).splitlines()[0]}): the safetensors file is "
            "damaged or incomplete; save or copy it again"
        ) from error
    require_matching(model.state_dict(), state, f"{folder} does not hold a {name} state dict")
    model.load_state_dict(state)
    preprocess = imagenet_preprocess(
        config.get("image_size", 224), config.get("mean", IMAGENET_MEAN), config.get("std", IMAGENET_STD)
    )
    classifier = from_module(model, preprocess, name=f"torchvision:{name}:{folder}")
    classifier.class_names = config.get("labels")
    classifier.multi_label = bool(config.get("multi_label", False))
    return classifier


def from_pretrained(path: str, trust_pickle: bool = False) -> ImageClassifier:
    """A Hugging Face image classifier and its image processor, from a local directory or the local cache."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    try:
        model = load_local(AutoModelForImageClassification, path, trust_pickle)
        processor = load_local(AutoImageProcessor, path, weights=False)
    except WrongCheckpoint:
        raise
    except (OSError, ValueError) as error:
        raise ValueError(
            f"cannot load the Hugging Face classifier '{path}' from a local directory or the local cache: "
            f"{str(error).splitlines()[0]}"
        ) from error

    def preprocess(images: Sequence[Image.Image]) -> Tensor:
        return processor(images=list(images), return_tensors="pt")["pixel_values"]

    layer, method = default_layer_and_method(model)
    return ImageClassifier(
        model_name(path),
        model.eval(),
        preprocess,
        class_names_of(model),
        layer,
        multi_label=model.config.problem_type == "multi_label_classification",
        method=method,
    )
