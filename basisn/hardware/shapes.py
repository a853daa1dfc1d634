"""Layer shapes for the cost model, read from any PyTorch model with forward hooks on one dummy input.

The cost model (docs/method.md §2.2) needs, per weight layer l: P_l output pixels per image (1 for a Linear on a
vector), g_l groups, L_l = (C_in/g)·kh·kw rows of the unrolled weight, O_l = C_out/g outputs per group, and the
kind. Basis-mapped layers (`basisn.layers.BasisConv2d/BasisLinear`, recognised by their class attribute
`basis_mapped`) also give the network's basis (n, m, G). Only weight layers are costed: activations, pooling,
normalisation and element-wise additions are digital work the model does not capture (docs/hardware.md). An
nn.MultiheadAttention contributes its input projection(s) and out_proj; its products of activations with
activations (Q·K^T, softmax·V) have no stored weight and are left out (docs/hardware.md, "Attention and
transformers").

The hooks run on the `meta` device (parameters swapped for meta tensors with `torch.func.functional_call`, the
model itself untouched), so ResNet-50 at 224x224 takes milliseconds; if the model fails on meta we fall back to the
CPU with its real parameters.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from basisn.atomic import atomic_write_json
from basisn.hardware.config import BasisSpec

SHAPES_FORMAT = "basisn-shapes/1"
KINDS = ("conv", "linear")


@dataclass(frozen=True)
class LayerShape:
    """One weight layer as the cost model sees it (docs/method.md §2.2 notation)."""

    name: str
    kind: str  # "conv" | "linear"
    P: int  # output pixels per image (1 for a Linear applied to a vector)
    g: int  # groups
    L: int  # weight rows per group: (C_in/g)·prod(kernel)
    O: int  # outputs per group: C_out/g
    mapped: bool | None = None  # basis-mapped? None: a plain model (the basisn scheme maps every layer)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not allowed (layer {self.name!r}); allowed: {', '.join(KINDS)}")
        for name in ("P", "g", "L", "O"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is not allowed (layer {self.name!r}); use an integer >= 1")
        if self.mapped not in (None, True, False):
            raise ValueError(f"mapped={self.mapped!r} is not allowed (layer {self.name!r}); use true, false or null")

    @property
    def macs(self) -> int:
        """Multiply-accumulates per image: P·g·L·O."""
        return self.P * self.g * self.L * self.O


@dataclass(frozen=True)
class NetworkShapes:
    """The weight layers of one network in execution order, plus its basis if it is basis-mapped."""

    name: str
    input_size: tuple[int, ...]
    layers: tuple[LayerShape, ...]
    basis: BasisSpec | None = None
    # True: `basis` is the model's own (a basis-mapped model's shapes), which the cost model prices and a
    # contradicting basis= may not replace; False: a basis given to a plain network for pricing (with_basis)
    own_basis: bool = field(default=True, compare=False)
    _cache: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        if not self.layers:
            raise ValueError(f"network {self.name!r} has no Conv/Linear layer; nothing to cost")
        if not all(isinstance(layer, LayerShape) for layer in self.layers):
            raise ValueError(f"network {self.name!r}: layers must be LayerShape objects")

    def __len__(self) -> int:
        return len(self.layers)

    def with_basis(self, basis: BasisSpec) -> NetworkShapes:
        """A plain network (the paper's) priced with `basis`; a basis-mapped one keeps its own basis."""
        if self.basis is not None:
            return self
        return NetworkShapes(self.name, self.input_size, self.layers, basis, own_basis=False)

    @property
    def model_basis(self) -> BasisSpec | None:
        """The basis the model was built with (None for a plain network, also one given a basis by with_basis)."""
        return self.basis if self.own_basis else None

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def weights(self) -> int:
        return sum(layer.g * layer.L * layer.O for layer in self.layers)

    def arrays(self) -> dict[str, np.ndarray]:
        """P, g, L, O as int64 arrays and `mapped` as bool (None counts as mapped), cached: the cost model is
        vectorised over layers."""
        if "arrays" not in self._cache:
            out = {k: np.array([getattr(layer, k) for layer in self.layers], dtype=np.int64) for k in "PgLO"}
            out["mapped"] = np.array([layer.mapped is not False for layer in self.layers], dtype=bool)
            self._cache["arrays"] = out
        return self._cache["arrays"]

    def table(self) -> Any:
        """The shapes as a pandas DataFrame (one row per layer)."""
        import pandas as pd

        return pd.DataFrame(
            [
                {"layer": i, "name": s.name, "kind": s.kind, "P": s.P, "g": s.g, "L": s.L, "O": s.O}
                | {"mapped": s.mapped, "macs": s.macs}
                for i, s in enumerate(self.layers)
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SHAPES_FORMAT,
            "name": self.name,
            "input_size": list(self.input_size),
            "basis": None if self.basis is None else self.basis.as_dict(),
            "layers": [
                {"name": s.name, "kind": s.kind, "P": s.P, "g": s.g, "L": s.L, "O": s.O, "mapped": s.mapped}
                for s in self.layers
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str | None = None) -> NetworkShapes:
        if not isinstance(data, dict) or data.get("format") != SHAPES_FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"shapes format={got!r} is not allowed; expected {SHAPES_FORMAT!r}")
        basis = data.get("basis")
        return cls(
            name=name or data.get("name", "model"),
            input_size=tuple(data.get("input_size", ())),
            layers=tuple(LayerShape(**layer) for layer in data["layers"]),
            basis=None if basis is None else BasisSpec(**basis),
        )


def save_shapes(shapes: NetworkShapes, path: str | os.PathLike[str]) -> Path:
    """Write `shapes` as JSON (atomically: a temp file moved into place), for `basisn hw-eval --model-shapes`."""
    return atomic_write_json(path, shapes.to_dict(), indent=1, sort_keys=False)


def load_shapes(path: str | os.PathLike[str], name: str | None = None) -> NetworkShapes:
    """Read a file written by `save_shapes`; `name` renames the network."""
    with open(path) as f:
        return NetworkShapes.from_dict(json.load(f), name=name)


# ----------------------------------------------------------------------------------------------------------------
# Reading shapes from a model.
# ----------------------------------------------------------------------------------------------------------------
def _is_basis(module: nn.Module) -> bool:
    return bool(getattr(type(module), "basis_mapped", False))


def _is_conv(module: nn.Module) -> bool:
    if isinstance(module, nn.modules.conv._ConvNd):
        return True
    return _is_basis(module) and hasattr(module, "kernel_size")


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (_is_basis(module) and hasattr(module, "in_features"))


def _weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv/Linear (basis-mapped or not) and attention modules; an attention module's projections are costed
    by its own hook (nn.MultiheadAttention reads out_proj.weight without calling out_proj)."""
    found = []
    attention: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            raise ValueError(f"layer {name!r} is a transposed convolution; not supported by the cost model")
        if any(name.startswith(prefix + ".") for prefix in attention):
            continue
        if isinstance(module, nn.MultiheadAttention) or _is_window_attention(module):
            attention.append(name)
            found.append((name, module))
        elif _is_conv(module) or _is_linear(module):
            found.append((name, module))
    return found


def _is_window_attention(module: nn.Module) -> bool:
    """torchvision's Swin attention (ShiftedWindowAttention, V2): it passes qkv.weight and proj.weight to
    F.linear itself, so their forward hooks never run."""
    children = module._modules
    return hasattr(module, "window_size") and _is_linear(children.get("qkv")) and _is_linear(children.get("proj"))


def _window_attention_shapes(name: str, module: nn.Module, x: torch.Tensor) -> list[LayerShape]:
    """qkv and proj of a window attention on (B, H, W, C): every token of the map padded to whole windows."""
    height, width, channels = (int(v) for v in x.shape[-3:])
    window_h, window_w = (int(v) for v in module.window_size)
    tokens = math.ceil(height / window_h) * window_h * math.ceil(width / window_w) * window_w
    shapes = []
    for child in ("qkv", "proj"):
        layer = module._modules[child]
        mapped = True if _is_basis(layer) else None
        shapes.append(
            LayerShape(f"{name}.{child}", "linear", tokens, 1, int(layer.in_features), int(layer.out_features), mapped)
        )
    return shapes


def _attention_shapes(
    name: str, module: nn.MultiheadAttention, args: tuple, kwargs: dict, batch: int
) -> list[LayerShape]:
    """The weight-stationary matmuls of one attention call: the q/k/v input projections and out_proj.

    The products of activations with activations (Q·K^T, softmax·V) have no stored weight and are not costed
    (docs/hardware.md, "Attention and transformers"). Token counts are per image.
    """
    names = ("query", "key", "value")
    query, key, value = (args[i] if len(args) > i else kwargs[names[i]] for i in range(3))
    embed = int(module.embed_dim)

    def tokens(x: torch.Tensor) -> int:
        return max(1, math.prod(x.shape[:-1]) // batch) if x.dim() == 3 else int(x.shape[0])

    def mapped(child: str) -> bool | None:  # a BasisMultiheadAttention holds its projections as basis layers
        layer = module._modules.get(child)
        return True if layer is not None and _is_basis(layer) else None

    t_query, t_key, t_value = tokens(query), tokens(key), tokens(value)
    shapes = []
    if module._qkv_same_embed_dim and query is key is value:  # self-attention: one (3E x E) matrix per token
        shapes.append(LayerShape(f"{name}.in_proj", "linear", t_query, 1, embed, 3 * embed, mapped("in_proj")))
    elif module._qkv_same_embed_dim:  # one packed matrix applied to different inputs: its three row blocks
        for part, count in (("q", t_query), ("k", t_key), ("v", t_value)):
            shapes.append(LayerShape(f"{name}.in_proj.{part}", "linear", count, 1, embed, embed, mapped("in_proj")))
    else:
        for proj, count, width in (
            ("q_proj", t_query, embed),
            ("k_proj", t_key, module.kdim),
            ("v_proj", t_value, module.vdim),
        ):
            shapes.append(LayerShape(f"{name}.{proj}", "linear", count, 1, int(width), embed, mapped(proj)))
    out_mapped = True if _is_basis(module.out_proj) else None
    shapes.append(LayerShape(f"{name}.out_proj", "linear", t_query, 1, embed, embed, out_mapped))
    return shapes


INPUT_SIZE_FORMS = (
    "an int (a square image's side), (H, W), (C, H, W) or (B, C, H, W); (F,) or (B, F) for a model without "
    "convolutions; or example_inputs= (a tensor, a tuple or a dict of them) for a model with several inputs"
)


def _is_size(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _resolve_input(model_layers: list[tuple[str, nn.Module]], input_size: int | tuple[int, ...]) -> tuple[int, ...]:
    """Full input shape with batch dimension from int / (H, W) / (C, H, W) / (B, C, H, W) (or (F,) / (B, F))."""
    sizes = (input_size,) if _is_size(input_size) else input_size
    if not isinstance(sizes, tuple | list) or not sizes or not all(_is_size(v) for v in sizes):
        raise ValueError(f"input_size={input_size!r} is not allowed; use {INPUT_SIZE_FORMS}")
    sizes = tuple(int(v) for v in sizes)
    first_conv = next((m for _, m in model_layers if _is_conv(m)), None)
    if first_conv is None:  # a model of Linear layers: (F,) or (B, F, ...)
        return (1, *sizes) if len(sizes) == 1 else sizes
    dims = len(first_conv.kernel_size)
    if len(sizes) == 1:
        return (1, first_conv.in_channels, *(sizes * dims))
    if len(sizes) == dims:
        return (1, first_conv.in_channels, *sizes)
    if len(sizes) == dims + 1:
        return (1, *sizes)
    if len(sizes) == dims + 2:
        return sizes
    raise ValueError(
        f"input_size={input_size!r} is not allowed; use an int, {dims} spatial sizes, (C, *spatial) or (B, C, *spatial)"
    )


def _example_arguments(example_inputs: object) -> tuple[tuple, dict]:
    """(positional, keyword) inputs of a forward call: a tensor, a tuple/list (positional) or a dict (keywords)."""
    if isinstance(example_inputs, torch.Tensor):
        args, kwargs = (example_inputs,), {}
    elif isinstance(example_inputs, tuple | list):
        args, kwargs = tuple(example_inputs), {}
    elif isinstance(example_inputs, Mapping):
        args, kwargs = (), dict(example_inputs)
    else:
        raise ValueError(
            f"example_inputs={type(example_inputs).__name__} is not allowed; pass a tensor, a tuple of inputs "
            "(positional) or a dict (keyword inputs)"
        )
    if not any(isinstance(v, torch.Tensor) for v in (*args, *kwargs.values())):
        raise ValueError("example_inputs holds no tensor; pass the tensors the model's forward takes")
    return args, kwargs


def _tensors_to(values: tuple | dict, device: str | torch.device, like: bool) -> Any:
    """The same inputs on `device` (empty on meta when `like`), other values unchanged."""
    move = (lambda t: torch.empty_like(t, device=device)) if like else (lambda t: t.to(device))  # fmt: skip
    if isinstance(values, dict):
        return {k: move(v) if isinstance(v, torch.Tensor) else v for k, v in values.items()}
    return tuple(move(v) if isinstance(v, torch.Tensor) else v for v in values)


def _shape_of(name: str, module: nn.Module, output: torch.Tensor) -> LayerShape:
    mapped = True if _is_basis(module) else None
    if _is_conv(module):
        g = int(module.groups)
        L = (int(module.in_channels) // g) * math.prod(int(k) for k in module.kernel_size)
        return LayerShape(name, "conv", math.prod(output.shape[2:]), g, L, int(module.out_channels) // g, mapped)
    return LayerShape(
        name, "linear", math.prod(output.shape[1:-1]), 1, int(module.in_features), int(module.out_features), mapped
    )


def _run_hooked(
    model: nn.Module, args: tuple, kwargs: dict, params: dict[str, torch.Tensor] | None
) -> list[LayerShape]:
    layers = _weight_layers(model)
    seen: list[LayerShape] = []
    calls: dict[str, int] = {}
    first = next(v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor))
    batch = int(first.shape[0]) if first.dim() else 1

    def hook(name: str):
        def record(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            label = name if calls[name] == 1 else f"{name}#{calls[name]}"  # a module called twice costs twice
            if isinstance(module, nn.MultiheadAttention):
                seen.extend(_attention_shapes(label, module, args, kwargs, batch))
            elif _is_window_attention(module):
                seen.extend(_window_attention_shapes(label, module, args[0] if args else kwargs["x"]))
            else:
                seen.append(_shape_of(label, module, output))

        return record

    handles = [module.register_forward_hook(hook(name), with_kwargs=True) for name, module in layers]
    modes = {m: m.training for m in model.modules()}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        model.eval()  # BatchNorm on a batch of one
        # the fused transformer kernels would skip the hooks of the attention and Linear layers they fuse
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad():
            if params is None:
                model(*args, **kwargs)
            else:
                torch.func.functional_call(model, params, args, kwargs, strict=False)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return seen


def _has_unassigned_segments(module: nn.Module) -> bool:
    group = getattr(module, "segment_group", None)
    return isinstance(group, torch.Tensor) and bool((group < 0).any())


def _network_basis(model: nn.Module) -> BasisSpec | None:
    banks = {id(m.bank): m.bank for m in model.modules() if _is_basis(m) and getattr(m, "bank", None) is not None}
    if not banks:
        return None
    if len(banks) > 1:
        raise ValueError(f"model has {len(banks)} different basis banks; the cost model expects one shared basis")
    bank = next(iter(banks.values()))
    unassigned = [m for m in model.modules() if _is_basis(m) and _has_unassigned_segments(m)]
    if unassigned:
        raise ValueError(
            f"model has {len(unassigned)} basis layer(s) with segments not assigned to a basis group yet "
            "(segment_group -1: a learned assignment before its fine-tune hardened it); cost the fine-tuned model"
        )
    # the coefficient quantizer sets the energy of a coefficient MAC (a pow2 coefficient is a shift and an add);
    # to_basisn gives every layer the same one, so the first layer's is the network's
    first = next(m for m in model.modules() if _is_basis(m) and getattr(m, "bank", None) is bank)
    return BasisSpec(
        int(bank.n_basis),
        int(bank.segment_len),
        int(getattr(bank, "groups", 1)),
        coef_bits=getattr(first, "coef_bits", None),
        coef_quant=getattr(first, "coef_quant", "uniform"),
    )


def layer_shapes(
    model: nn.Module,
    input_size: int | tuple[int, ...] | None = None,
    name: str | None = None,
    *,
    example_inputs: Any = None,
) -> NetworkShapes:
    """P, g, L, O and kind of every Conv/Linear (or basis-mapped) layer of `model`, in execution order.

    `input_size`: an int (square image; channels from the first convolution), the spatial sizes, (C, H, W) or
    (B, C, H, W); for a model without convolutions (F,) or (B, F). Or `example_inputs` instead: a tensor, a tuple
    (positional inputs) or a dict (keyword inputs), for a model whose forward takes several inputs. Bad sizes and a
    model that does not run on them raise one line naming input_size. In a basis-mapped model, plain Conv/Linear
    layers (kept dense via `exclude`) have mapped=False; in a plain model every layer has mapped=None.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model={type(model).__name__} is not allowed; pass an nn.Module")
    if (input_size is None) == (example_inputs is None):
        raise ValueError(
            "layer_shapes needs exactly one of input_size and example_inputs "
            f"(got {'both' if input_size is not None else 'neither'}); input_size: {INPUT_SIZE_FORMS}"
        )
    layers = _weight_layers(model)
    if not layers:
        raise ValueError(f"model {type(model).__name__} has no Conv/Linear layer; nothing to cost")
    if example_inputs is None:
        shape = _resolve_input(layers, input_size)
        args, kwargs = (torch.zeros(shape),), {}
        given = f"input_size={input_size!r} (an input of shape {shape})"
    else:
        args, kwargs = _example_arguments(example_inputs)
        first = next(v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor))
        shape = tuple(first.shape) if first.dim() > 1 else (1, *first.shape)
        given = (
            "example_inputs (shapes "
            + ", ".join(str(tuple(v.shape)) for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor))
            + ")"
        )
    basis = _network_basis(model)
    named = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers(remove_duplicate=False))
    try:
        try:
            meta = {k: torch.empty_like(v, device="meta") for k, v in named.items()}
            on_meta = _tensors_to(args, "meta", like=True), _tensors_to(kwargs, "meta", like=True)
            seen = _run_hooked(model, *on_meta, meta)
        except Exception:  # noqa: BLE001 - some models do not run on meta (data-dependent code); the CPU always works
            device = next((v.device for v in named.values()), torch.device("cpu"))
            if device.type == "meta":
                raise
            seen = _run_hooked(
                model, _tensors_to(args, device, like=False), _tensors_to(kwargs, device, like=False), None
            )
    except Exception as error:  # noqa: BLE001 - the model's own error, in one line with what was asked
        reason = " ".join(str(error).split())[:300]
        raise ValueError(
            f"layer_shapes: {type(model).__name__} does not run on {given}: {type(error).__name__}: {reason}; "
            f"input_size takes {INPUT_SIZE_FORMS}"
        ) from error
    if basis is not None:  # layers that are not basis-mapped in a basis-mapped model stay dense
        seen = [s if s.mapped else LayerShape(s.name, s.kind, s.P, s.g, s.L, s.O, False) for s in seen]
    if not seen:
        raise ValueError(f"model {type(model).__name__}: no Conv/Linear layer ran on {given}")
    ran = {s.name.split("#")[0] for s in seen}
    idle = [n for n, _ in layers if n not in ran and not any(s.startswith(n + ".") for s in ran)]
    if idle:
        warnings.warn(
            f"layer_shapes: {len(idle)} weight layer(s) did not run on {given} and are not "
            f"costed: {', '.join(idle[:5])}{', ...' if len(idle) > 5 else ''}",
            stacklevel=2,
        )
    return NetworkShapes(name or type(model).__name__, shape[1:], tuple(seen), basis)
