"""Everything a BasisN forward pass needs: quantizers, the shared basis bank, basis-mapped layers.

A basis-mapped layer holds no weight. Its weight matrix (O x L, PyTorch's (C_in, kh, kw) unrolling) is cut into
S segments of length m, and segment s of output row o is

    w[o, s, :] = scale[o] * sum_i Q_c(coef[o, s, i]) * Q_b(B[i, :])          (docs/method.md §1.1)

with B the one global basis shared by every layer. For training speed the weights of ALL layers are rebuilt
together, once per forward pass, by one matmul (`rebuild_weights`), and then the ordinary `F.conv2d` / `F.linear`
run, so cuDNN/oneDNN kernels, AMP and channels_last keep working. A layer's `.weight` is that rebuilt tensor
(read-only), so code that reads `module.weight` (nn.MultiheadAttention reads `out_proj.weight`, torchvision's
Swin passes `qkv.weight` to F.linear) runs unchanged; `BasisMultiheadAttention` does the same for attention's
bare in-projection Parameter. The "feed inputs through the basis, then combine" order of the hardware lives
only in `basisn.hardware.sim`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

QUANTIZERS = ("uniform", "pow2")
# segment_group values of a learned group assignment before it hardens (basisn.parallel, docs/method.md §1.3)
UNASSIGNED = -1  # every group active (the "learned" option's open phase)
DYNAMIC = -2  # each pass uses the group of largest coefficient norm; gradients reach every group (straight-through)
COEF_SCALES = ("channel", "layer")


# --------------------------------------------------------------------------------------------------------------
# Quantizers. Both are symmetric and keep zero exactly; training goes through the straight-through estimator.
# --------------------------------------------------------------------------------------------------------------
def straight_through(x: Tensor, q: Tensor) -> Tensor:
    """Forward: q. Backward: identity to x (the straight-through estimator)."""
    return x + (q - x).detach()


def quantize_uniform(x: Tensor, bits: int, max_abs: Tensor) -> Tensor:
    """Round to 2^bits - 1 symmetric levels {-k..k}·max_abs/k, k = 2^(bits-1) - 1 (at most 2^bits levels)."""
    top_level = 2 ** (bits - 1) - 1
    step = torch.where(max_abs > 0, max_abs / top_level, torch.ones_like(max_abs))
    return torch.clamp(torch.round(x / step), -top_level, top_level) * step


def quantize_pow2(x: Tensor, bits: int, max_abs: Tensor) -> Tensor:
    """Round to zero or sign·2^e, e in the 2^(bits-1) - 1 exponents up to the one nearest max_abs.

    1 sign bit + (bits-1) bits of exponent code, one code meaning zero: a coefficient is applied by a shift and an
    add in the digital combination unit. Magnitudes round to the nearest level in the linear domain.
    """
    n_exponents = 2 ** (bits - 1) - 1
    tiny = torch.finfo(x.dtype).tiny
    e_max = torch.round(torch.log2(max_abs.clamp_min(tiny)))
    e_min = e_max - (n_exponents - 1)
    magnitude = x.abs()
    e = torch.floor(torch.log2(magnitude.clamp_min(tiny)))
    e = e + (magnitude > 1.5 * torch.exp2(e)).to(e.dtype)  # nearest of 2^e, 2^(e+1)
    e = torch.clamp(e, e_min, e_max)
    q = torch.sign(x) * torch.exp2(e)
    return torch.where(magnitude < torch.exp2(e_min - 1), torch.zeros_like(q), q)


def quantize(x: Tensor, bits: int | None, method: str, max_abs: Tensor) -> Tensor:
    """Quantize with `method` ("uniform" | "pow2"); bits=None returns x unchanged (quantization off)."""
    if bits is None:
        return x
    if method == "uniform":
        return quantize_uniform(x, bits, max_abs)
    if method == "pow2":
        return quantize_pow2(x, bits, max_abs)
    raise ValueError(f"coef_quant={method!r} is not a quantizer; allowed: {', '.join(QUANTIZERS)}")


def check_bits(name: str, bits: int | None) -> None:
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16):
        raise ValueError(f"{name}={bits!r} is not allowed; use an integer in [2, 16] or None (no quantization)")


# --------------------------------------------------------------------------------------------------------------
# The bank: one basis for the whole network.
# --------------------------------------------------------------------------------------------------------------
class BasisBank(nn.Module):
    """The global basis B (n_basis x segment_len) shared by every basis-mapped layer of a network.

    It is registered once, on the model's root (`model.basisn_bank`), so it appears once in `state_dict`; the
    layers keep an unregistered reference to it. `groups` > 1 splits the basis into equal groups for the
    group-sparse option (each segment uses one group).
    """

    def __init__(self, n_basis: int, segment_len: int, basis_bits: int | None = 8, groups: int = 1) -> None:
        super().__init__()
        check_positive_int("n_basis", n_basis)
        check_positive_int("segment_len", segment_len)
        if n_basis > segment_len:
            raise ValueError(
                f"n_basis={n_basis} exceeds segment_len={segment_len}; allowed: 1 <= n_basis <= segment_len "
                "(more basis vectors than the segment length cannot be linearly independent)"
            )
        check_bits("basis_bits", basis_bits)
        check_positive_int("groups", groups)
        if n_basis % groups:
            raise ValueError(f"groups={groups} does not divide n_basis={n_basis}; allowed: a divisor of n_basis")
        self.n_basis, self.segment_len, self.basis_bits, self.groups = (
            n_basis,
            segment_len,
            basis_bits,
            groups,
        )
        self.weight = nn.Parameter(random_orthonormal(n_basis, segment_len))
        self.layers: list[BasisLayer] = []  # set by attach_bank, in forward order of the model's modules

    @property
    def group_size(self) -> int:
        return self.n_basis // self.groups

    def follow_root(self) -> None:
        """On a container root, which holds the basis Parameter itself (attach_bank), re-point `weight` at it.

        Calls that replace a module's Parameter objects (`to_empty`, `load_state_dict(assign=True)`, conversions
        under torch.__future__'s overwrite setting) replace the root's; the bank must read the same one.
        """
        root = self.__dict__.get("_container_root")
        if root is not None:
            held = root._parameters.get(BANK_KEY)
            if held is not None and held is not self._parameters["weight"]:
                self._parameters["weight"] = held

    def quantized(self) -> Tensor:
        """Q_b(B): symmetric uniform, one scale for the whole basis (the cells hold `basis_bits`-bit weights)."""
        self.follow_root()
        if self.basis_bits is None:
            return self.weight
        max_abs = self.weight.detach().abs().amax()
        return straight_through(self.weight, quantize_uniform(self.weight, self.basis_bits, max_abs))

    def extra_repr(self) -> str:
        return (
            f"n_basis={self.n_basis}, segment_len={self.segment_len}, basis_bits={self.basis_bits}, "
            f"groups={self.groups}, layers={len(self.layers)}"
        )


def random_orthonormal(n: int, m: int, generator: torch.Generator | None = None) -> Tensor:
    """n orthonormal rows of length m (n <= m), uniformly random (QR of a Gaussian matrix)."""
    q, r = torch.linalg.qr(torch.randn(m, n, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # make the distribution uniform (Haar), not biased by QR's signs
    return q.T.contiguous().float()


def check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} is not allowed; use an integer >= 1")


# --------------------------------------------------------------------------------------------------------------
# Basis-mapped layers.
# --------------------------------------------------------------------------------------------------------------
class BasisLayer(nn.Module):
    """Common part of BasisConv2d / BasisLinear: coefficients (O x S x n), per-output scale, quantizer settings."""

    basis_mapped = True  # lets tools (e.g. basisn.hardware.layer_shapes) recognise basis layers without imports

    def __init__(
        self,
        out_rows: int,
        row_len: int,
        weight_shape: tuple[int, ...],
        bank: BasisBank,
        coef_bits: int | None,
        coef_quant: str,
        coef_scale: str,
        bias: bool,
    ) -> None:
        super().__init__()
        if not isinstance(bank, BasisBank):
            raise ValueError(f"bank={type(bank).__name__} is not allowed; pass a basisn.BasisBank")
        check_bits("coef_bits", coef_bits)
        if coef_quant not in QUANTIZERS:
            raise ValueError(f"coef_quant={coef_quant!r} is not a quantizer; allowed: {', '.join(QUANTIZERS)}")
        if coef_scale not in COEF_SCALES:
            raise ValueError(f"coef_scale={coef_scale!r} is not allowed; allowed: {', '.join(COEF_SCALES)}")
        object.__setattr__(self, "bank", bank)  # a plain reference: the bank is registered once, on the root
        self.coef_bits, self.coef_quant, self.coef_scale = coef_bits, coef_quant, coef_scale
        self.weight_shape = tuple(weight_shape)
        self.row_len = row_len
        self.segments = math.ceil(row_len / bank.segment_len)
        self.coef = nn.Parameter(torch.empty(out_rows, self.segments, bank.n_basis))
        self.scale = nn.Parameter(torch.ones(out_rows))
        self.bias = nn.Parameter(torch.zeros(out_rows)) if bias else None
        if bank.groups > 1:  # which basis group each segment may use (-1: any, until a learned assignment hardens)
            self.register_buffer("segment_group", torch.zeros(out_rows, self.segments, dtype=torch.long))
        else:
            self.segment_group = None
        self._rebuilt: Tensor | None = None  # this pass's weight, set by the model's pre-forward hook
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random coefficients giving rows of unit norm, scaled like Kaiming-normal weights (training from scratch)."""
        n_active = self.bank.group_size
        nn.init.normal_(self.coef, std=1.0 / math.sqrt(self.segments * n_active))
        with torch.no_grad():
            self.scale.fill_(math.sqrt(2.0))  # Kaiming: row norm sqrt(fan_in * 2 / fan_in)
            if self.bias is not None:
                self.bias.zero_()
            if self.segment_group is not None:
                self.segment_group.copy_(torch.randint(0, self.bank.groups, self.segment_group.shape))

    @property
    def out_rows(self) -> int:
        return self.coef.shape[0]

    def quantized_coefficients(self) -> Tensor:
        """Q_c(coef) with the group mask applied, shape (O, S, n): what the digital unit multiplies with."""
        return _quantized_coefficients([self]).reshape(self.coef.shape)

    def rebuild_weight(self) -> Tensor:
        """This layer's reconstructed weight, rebuilt on its own (the model's forward rebuilds all layers at once)."""
        return rebuild_layer_weights([self])[0]

    def current_weight(self) -> Tensor:
        """This pass's rebuilt weight as a plain tensor (what forward uses): the root's one-matmul rebuild inside
        the model's forward, else rebuilt on the spot."""
        rebuilt = self.__dict__.get("_rebuilt")
        return rebuilt if rebuilt is not None else self.rebuild_weight()

    @property
    def weight(self) -> Tensor:
        """The reconstructed weight, as a tensor (code that reads `module.weight` works; gradients reach coef,
        scale and the basis). Inside the model's forward it is the weight the root's one-matmul rebuild made for
        this pass; outside it is rebuilt on the spot and refuses in-place changes (RebuiltWeight): `nn.init`,
        `.data.zero_()` or `.copy_()` on it would change a copy that the next read rebuilds away. The layer's
        parameters are coef, scale, bias."""
        rebuilt = self.__dict__.get("_rebuilt")
        if rebuilt is not None:
            return rebuilt
        return RebuiltWeight.wrap(self.rebuild_weight(), type(self).__name__)

    @weight.setter
    def weight(self, value: object) -> None:
        raise AttributeError(_READ_ONLY_WEIGHT.format(cls=type(self).__name__, how=_HOW_TO_SET))

    @weight.deleter
    def weight(self) -> None:
        raise AttributeError(_READ_ONLY_WEIGHT.format(cls=type(self).__name__, how=_HOW_TO_SET))

    def __setattr__(self, name: str, value: object) -> None:
        if name == "weight":  # nn.Module.__setattr__ would register a Parameter under the property's name
            raise AttributeError(_READ_ONLY_WEIGHT.format(cls=type(self).__name__, how=_HOW_TO_SET))
        super().__setattr__(name, value)

    def register_parameter(self, name: str, param: nn.Parameter | None) -> None:
        if name == "weight_orig":  # torch.nn.utils.prune(layer, "weight") moving the weight it read aside
            raise RuntimeError(
                f"{type(self).__name__}.weight is rebuilt, not a Parameter, so torch.nn.utils.prune cannot prune it; "
                f"prune the coefficients instead, e.g. prune.l1_unstructured(layer, 'coef', amount=0.5)"
            )
        super().register_parameter(name, param)


_READ_ONLY_WEIGHT = (
    "{cls}.weight is rebuilt from the shared basis and the layer's coefficients and cannot be assigned or deleted; "
    "{how}"
)

# how to set a basis-mapped layer's weights, quoted by every refusal (assignment and in-place changes alike)
_HOW_TO_SET = (
    "set the dense model's weights before basisn.to_basisn, change the layer's .coef / .scale (nn.init, weight "
    "decay and torch.nn.utils.prune work on them), or use basisn.to_dense for ordinary layers with a weight Parameter"
)
_IN_PLACE_DUNDERS = (
    {f"__i{op}__" for op in ("add", "sub", "mul", "matmul", "truediv", "floordiv", "mod", "pow", "lshift", "rshift")}
    | {f"__i{op}__" for op in ("and", "or", "xor")}
    | {"__setitem__", "__set__"}
)
_ALLOWED_IN_PLACE = {"requires_grad_", "retain_grad"}  # autograd flags, not values


def _changes_in_place(func: object, args: tuple, kwargs: dict) -> bool:
    """Whether `func(*args, **kwargs)` writes into args[0] (a method ending in "_", an augmented assignment,
    item or `.data` assignment) or into an `out=` tensor."""
    name = getattr(func, "__name__", "")
    if isinstance(kwargs.get("out"), RebuiltWeight):
        return True
    if not isinstance(_target(args, kwargs), RebuiltWeight) or name in _ALLOWED_IN_PLACE:
        return False
    return name in _IN_PLACE_DUNDERS or (name.endswith("_") and not name.startswith("__"))


def _target(args: tuple, kwargs: dict) -> object:
    """The tensor an operation acts on: its first argument (torch.nn.init passes it by keyword, `tensor=`)."""
    if args:
        return args[0]
    return next((kwargs[key] for key in ("tensor", "input", "self") if key in kwargs), None)


class RebuiltWeight(torch.Tensor):
    """A basis-mapped layer's `.weight` read outside the forward: the rebuilt weight, refusing in-place changes.

    The layer holds no weight Parameter: every read rebuilds the weight from the basis and the coefficients, so an
    in-place change (`nn.init.zeros_(layer.weight)`, `layer.weight.data.zero_()`, `layer.weight.copy_(w)`,
    `layer.weight[0] = 1`) would succeed on a copy and change nothing. Those raise one line instead; views of it
    (`.data`, `.detach()`, slices) refuse too. Every other operation returns an ordinary tensor, and gradients
    flow as from the plain rebuilt weight. A tensor subclass (`__torch_function__`) rather than a check after
    the fact: a plain tensor cannot tell that it was written to.
    """

    layer_type = "BasisLayer"

    @staticmethod
    def wrap(weight: Tensor, layer_type: str) -> RebuiltWeight:
        wrapped = weight.as_subclass(RebuiltWeight)
        wrapped.layer_type = layer_type
        return wrapped

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206 - torch's protocol
        kwargs = kwargs or {}
        if _changes_in_place(func, args, kwargs):
            candidates = (*args, *kwargs.values())
            layer_type = next(a.layer_type for a in candidates if isinstance(a, RebuiltWeight))
            name = getattr(func, "__name__", "an in-place operation")
            what = {"__set__": "assigning .data", "__setitem__": "item assignment"}.get(name, f"{name}()")
            raise RuntimeError(
                f"{layer_type}.weight cannot be changed in place ({what} would change a rebuilt copy and be "
                f"ignored): it is rebuilt from the shared basis and .coef/.scale on every read; {_HOW_TO_SET}"
            )
        with torch._C.DisableTorchFunctionSubclass():
            if getattr(func, "__name__", "") == "__reduce_ex__":  # torch.save / pickle: an ordinary tensor
                return args[0].as_subclass(torch.Tensor).__reduce_ex__(*args[1:])
            out = func(*args, **kwargs)
        source = args[0] if args and isinstance(args[0], RebuiltWeight) else None
        if source is not None and isinstance(out, torch.Tensor) and _shares_storage(out, source):
            return cls.wrap(out, source.layer_type)  # a view (.data, .detach(), a slice): read-only too
        return out

    def __repr__(self, *, tensor_contents: object = None) -> str:
        with torch._C.DisableTorchFunctionSubclass():
            return torch.Tensor.__repr__(self.as_subclass(torch.Tensor))


def _shares_storage(a: Tensor, b: Tensor) -> bool:
    try:
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.numel() > 0
    except (RuntimeError, NotImplementedError):  # meta tensors and other storage-less kinds
        return False


class BasisConv2d(BasisLayer):
    """Drop-in replacement for nn.Conv2d whose kernels are quantized combinations of the shared basis."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        bank: BasisBank,
        coef_bits: int | None = 4,
        coef_quant: str = "uniform",
        coef_scale: str = "channel",
    ) -> None:
        # nn.Conv2d validates the hyper-parameters and computes the padding for padding_mode != "zeros";
        # we borrow those checks (on the meta device: no memory) instead of re-writing them.
        reference = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device="meta",
        )
        kh, kw = reference.kernel_size
        super().__init__(
            out_channels,
            (in_channels // groups) * kh * kw,
            (out_channels, in_channels // groups, kh, kw),
            bank,
            coef_bits,
            coef_quant,
            coef_scale,
            bias,
        )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = (
            reference.kernel_size,
            reference.stride,
            reference.dilation,
        )
        self.padding, self.groups, self.padding_mode = reference.padding, groups, padding_mode
        self._reversed_padding_repeated_twice = reference._reversed_padding_repeated_twice
        # The layer has no 4-D parameter, so `model.to(memory_format=torch.channels_last)` would have nothing to
        # convert and could not ask for NHWC weights as it does for nn.Conv2d. This tiny 4-D buffer (not saved) is
        # converted by that call instead, and records the layout the rebuilt weight should take.
        self.register_buffer("layout_probe", torch.zeros(1, 2, 1, 2), persistent=False)

    @property
    def channels_last(self) -> bool:
        """True after `.to(memory_format=torch.channels_last)`: the rebuilt weight is then made NHWC."""
        return not self.layout_probe.is_contiguous()

    def forward(self, x: Tensor) -> Tensor:
        weight = self.current_weight()  # already NHWC when the layer is channels_last (see rebuild_layer_weights)
        if not self.channels_last and (
            x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        ):
            # An NCHW layer fed NHWC activations. oneDNN/cuDNN are fast on NHWC activations only with an NHWC
            # weight, and the output layout follows the weight's strides when the input is ambiguous (one channel),
            # so the weight is copied into NHWC strides here: one copy, the one the conv would otherwise make.
            # clone, not .contiguous(): a one-channel kernel counts as NHWC-contiguous in any strides, and only
            # clone(memory_format=...) writes the strides oneDNN/cuDNN read as NHWC.
            weight = weight.clone(memory_format=torch.channels_last)
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(x, weight, self.bias, self.stride, _pair(0), self.dilation, self.groups)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, groups={self.groups}, segments_per_row={self.segments}, "
            f"coef_bits={self.coef_bits}, coef_quant={self.coef_quant}"
        )


class BasisLinear(BasisLayer):
    """Drop-in replacement for nn.Linear whose rows are quantized combinations of the shared basis."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        bank: BasisBank,
        coef_bits: int | None = 4,
        coef_quant: str = "uniform",
        coef_scale: str = "channel",
    ) -> None:
        check_positive_int("in_features", in_features)
        check_positive_int("out_features", out_features)
        super().__init__(
            out_features,
            in_features,
            (out_features, in_features),
            bank,
            coef_bits,
            coef_quant,
            coef_scale,
            bias,
        )
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.current_weight(), self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, segments_per_row={self.segments}, "
            f"coef_bits={self.coef_bits}, coef_quant={self.coef_quant}"
        )


# --------------------------------------------------------------------------------------------------------------
# Rebuilding weights: all layers, one matmul.
# --------------------------------------------------------------------------------------------------------------
def _segment_index(layers: list[BasisLayer], device: torch.device) -> tuple[Tensor, Tensor]:
    """(output row, layer) of every segment of the concatenation; cached per layout and device."""
    layout = (tuple((layer.out_rows, layer.segments) for layer in layers), str(device))
    cache = layers[0].bank.__dict__.setdefault("_segment_index_cache", {})
    if layout not in cache:
        rows = torch.tensor([r for r, _ in layout[0]])
        segments = torch.tensor([s for _, s in layout[0]])
        segments_per_row = torch.repeat_interleave(segments, rows)
        row_of_segment = torch.repeat_interleave(torch.arange(len(segments_per_row)), segments_per_row)
        layer_of_segment = torch.repeat_interleave(torch.arange(len(layers)), rows * segments)
        if len(cache) > 8:  # layouts seen: the model's, and single layers' rebuilt on their own
            cache.clear()
        cache[layout] = (row_of_segment.to(device), layer_of_segment.to(device))
    return cache[layout]


def _group_layout(layers: list[BasisLayer], device: torch.device) -> tuple[Tensor, Tensor | None]:
    """(group of every segment, or -1; the a = n/G active columns of every segment, or None if any is -1).

    Built from the layers' `segment_group` buffers and cached on the bank until one of them changes (its
    `_version` or storage): a hardened model (no -1) then gathers its active columns instead of masking all n.
    """
    bank = layers[0].bank
    groups = [layer.segment_group for layer in layers]
    key = (tuple((id(g), g._version, g.data_ptr(), g.shape) for g in groups), str(device))
    cached = bank.__dict__.get("_group_layout_cache")
    if cached is None or cached[0] != key:
        segment_group = torch.cat([g.reshape(-1) for g in groups]).to(device)
        columns = None
        if bool((segment_group >= 0).all()):  # hardened: every segment has its one group
            offsets = torch.arange(bank.group_size, device=device)
            columns = segment_group[:, None] * bank.group_size + offsets[None, :]
        cached = (key, segment_group, columns, groups)  # holding `groups` keeps their ids from being reused
        bank.__dict__["_group_layout_cache"] = cached
    return cached[1], cached[2]


def _quantized_coefficients(layers: list[BasisLayer]) -> Tensor:
    """Q_c of every layer's coefficients, (all segments, n), computed on the concatenation in a few kernels.

    With groups (G > 1) a hardened model quantizes only each segment's a = n/G active coefficients (gathered)
    and scatters them into zeros; a model with unassigned segments (segment_group -1: all n active) masks
    instead. Both give the same values: masked coefficients quantize to +0 and never raise a row's range.
    """
    first = layers[0]
    bank = first.bank
    n_basis = bank.n_basis
    coefs = torch.cat([layer.coef.reshape(-1, n_basis) for layer in layers])  # (all segments, n)
    columns = None
    if bank.groups > 1:
        segment_group, columns = _group_layout(layers, coefs.device)
        if columns is None:  # some segment is not assigned yet (-1 or -2): mask
            vector_group = torch.arange(n_basis, device=coefs.device) // bank.group_size
            dynamic = segment_group == DYNAMIC
            any_dynamic = bool(dynamic.any())
            if any_dynamic:  # this pass's group: the largest coefficient norm (what hardening would pick)
                norms = coefs.detach().view(-1, bank.groups, bank.group_size).norm(dim=-1)
                segment_group = torch.where(dynamic, norms.argmax(dim=1), segment_group)
            # -1: not assigned yet (the learned option before hardening): every group is active
            active = (vector_group[None, :] == segment_group[:, None]) | (segment_group[:, None] == UNASSIGNED)
            masked = coefs * active.to(coefs.dtype)
            # dynamic segments: forward the masked value, backward to every group (a straight-through estimator),
            # so an inactive group's coefficients keep learning and can overtake the active one
            coefs = torch.where(dynamic[:, None], straight_through(coefs, masked), masked) if any_dynamic else masked
    values = coefs if columns is None else coefs.gather(1, columns)  # (all segments, n or a)
    if first.coef_bits is not None:
        # the quantizer's range: max |coef| per output channel (or per layer), from the current values
        row_of_segment, layer_of_segment = _segment_index(layers, coefs.device)
        range_of_segment = row_of_segment if first.coef_scale == "channel" else layer_of_segment
        n_ranges = sum(layer.out_rows for layer in layers) if first.coef_scale == "channel" else len(layers)
        with torch.no_grad():  # the straight-through estimator below needs no graph of the quantizer
            detached = values.detach()
            largest = detached.abs().amax(dim=1)  # (torch.linalg.vector_norm(ord=inf) is 40x slower here)
            max_abs = torch.zeros(n_ranges, device=coefs.device, dtype=coefs.dtype).scatter_reduce(
                0, range_of_segment, largest, reduce="amax"
            )
            quantized = quantize(detached, first.coef_bits, first.coef_quant, max_abs[range_of_segment, None])
        values = straight_through(values, quantized)
    if columns is None:
        return values
    return torch.zeros_like(coefs).scatter(1, columns, values)


class _ScaleCombineAssemble(torch.autograd.Function):
    """w = split((coef_q * scale[row]) @ B_q), per layer cut to its row length, NHWC where the layer wants it.

    One autograd node instead of a dozen (scale gather, multiply, matmul, split, per-layer slice/view/NHWC
    clone, each with its backward): the backward writes each layer's gradient once, into one (segments, m)
    buffer, and runs the two matmuls of the rebuild's gradient. The formulas are autograd's own for these ops.
    Under autocast the matmul runs in the autocast dtype, as `@` would.
    """

    @staticmethod
    def forward(ctx, coefs: Tensor, scales: Tensor, basis: Tensor, row_of_segment: Tensor, plan: tuple) -> tuple:
        row_scale = scales.index_select(0, row_of_segment)[:, None]
        scaled = coefs * row_scale
        device_type = coefs.device.type
        autocast = torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)
        if autocast:
            dtype = torch.get_autocast_dtype(device_type)
            scaled_used, basis_used = scaled.to(dtype), basis.to(dtype)
            with torch.autocast(device_type, enabled=False):
                segments = scaled_used @ basis_used  # (all segments, m): the one matmul
        else:
            scaled_used, basis_used = scaled, basis
            segments = scaled_used @ basis_used
        weights, start = [], 0
        for count, out_rows, row_len, weight_shape, nhwc in plan:
            rows = segments[start : start + count].view(out_rows, -1)[:, :row_len]  # drop the padding
            weight = rows.unflatten(1, weight_shape[1:])
            weights.append(weight.clone(memory_format=torch.channels_last) if nhwc else weight)
            start += count
        ctx.save_for_backward(coefs, row_scale, scaled_used, basis_used, row_of_segment)
        ctx.plan, ctx.n_rows, ctx.dtypes = plan, scales.shape[0], (coefs.dtype, scales.dtype, basis.dtype)
        ctx.segment_len = segments.shape[1]
        return tuple(weights)

    @staticmethod
    def backward(ctx, *grad_weights: Tensor | None) -> tuple:
        coefs, row_scale, scaled_used, basis_used, row_of_segment = ctx.saved_tensors
        grad_segments = torch.empty(
            scaled_used.shape[0], ctx.segment_len, dtype=scaled_used.dtype, device=scaled_used.device
        )
        start = 0
        for (count, out_rows, row_len, weight_shape, _), grad in zip(ctx.plan, grad_weights):
            rows = grad_segments[start : start + count].view(out_rows, -1)
            if grad is None:
                rows.zero_()
            else:
                rows[:, :row_len].unflatten(1, weight_shape[1:]).copy_(grad)
                rows[:, row_len:].zero_()
            start += count
        grad_coefs = grad_scales = grad_basis = None
        coef_dtype, scale_dtype, basis_dtype = ctx.dtypes
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            grad_scaled = grad_segments.mm(basis_used.t()).to(coef_dtype)
            if ctx.needs_input_grad[0]:
                grad_coefs = grad_scaled * row_scale
            if ctx.needs_input_grad[1]:
                per_segment = (grad_scaled * coefs).sum(1)
                grad_scales = torch.zeros(ctx.n_rows, dtype=scale_dtype, device=coefs.device)
                grad_scales.index_add_(0, row_of_segment, per_segment.to(scale_dtype))
        if ctx.needs_input_grad[2]:
            grad_basis = scaled_used.t().mm(grad_segments).to(basis_dtype)
        return grad_coefs, grad_scales, grad_basis, None, None


def rebuild_layer_weights(layers: list[BasisLayer]) -> list[Tensor]:
    """Weights of `layers` (which share one bank and one quantizer setting) from one matmul, in their order.

    The list-of-layers form of `rebuild_weights(model)`, without its checks or bank sync. A channels_last conv
    layer gets its weight in NHWC strides (the one copy its convolution would make).
    """
    bank = layers[0].bank
    coefs = _quantized_coefficients(layers)
    row_of_segment, _ = _segment_index(layers, coefs.device)
    scales = torch.cat([layer.scale for layer in layers])
    plan = tuple(
        (
            layer.out_rows * layer.segments,
            layer.out_rows,
            layer.row_len,
            layer.weight_shape,
            isinstance(layer, BasisConv2d) and layer.channels_last,
        )
        for layer in layers
    )
    return list(_ScaleCombineAssemble.apply(coefs, scales, bank.quantized(), row_of_segment, plan))


def is_conv(module: nn.Module) -> bool:
    """nn.Conv2d or its basis-mapped replacement: for the loops that pick layers by type (init, weight decay,
    pruning), which `isinstance(module, nn.Conv2d)` alone would skip after to_basisn."""
    return isinstance(module, nn.Conv2d | BasisConv2d)


def is_linear(module: nn.Module) -> bool:
    """nn.Linear or its basis-mapped replacement (see is_conv)."""
    return isinstance(module, nn.Linear | BasisLinear)


def weight_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The Parameters in a layer's weight role: [weight] of an nn.Conv2d / nn.Linear, [coef] of a basis-mapped
    layer (its weight is rebuilt from them). For weight-decay groups and custom inits written for plain layers."""
    if isinstance(module, BasisLayer):
        coef = module._parameters.get("coef")  # torch.nn.utils.prune renames it coef_orig
        return [coef if coef is not None else module._parameters["coef_orig"]]
    weight = getattr(module, "weight", None)
    return [weight] if isinstance(weight, nn.Parameter) else []


def _refresh_pruned(layers: list[BasisLayer]) -> None:
    """Recompute the coefficients of layers pruned with torch.nn.utils.prune before the rebuild reads them.

    prune recomputes `coef = coef_orig * mask` in the layer's own forward pre-hook, which runs after the root's
    rebuild: without this the rebuild would use last pass's masked tensor (and its freed graph).
    """
    from torch.nn.utils import prune  # here: imported only by models that were pruned

    for layer in layers:
        if "coef_orig" in layer._parameters:
            for hook in layer._forward_pre_hooks.values():
                if isinstance(hook, prune.BasePruningMethod):
                    hook(layer, ())


def basis_layers(model: nn.Module) -> list[tuple[str, BasisLayer]]:
    """(name, layer) of every basis-mapped layer of `model`, in module order."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, BasisLayer)]


def rebuild_weights(model: nn.Module) -> dict[str, Tensor]:
    """Every basis-mapped weight of `model` (module name -> weight), computed with one matmul over all layers."""
    named = basis_layers(model)
    if not named:
        raise ValueError(
            f"rebuild_weights: {type(model).__name__} has no basis-mapped layer; convert it with basisn.to_basisn first"
        )
    if hasattr(model, "basisn_bank"):
        sync_bank(model)
    _check_shared_settings([layer for _, layer in named])
    return dict(zip([name for name, _ in named], rebuild_layer_weights([layer for _, layer in named])))


def _check_shared_settings(layers: Iterable[BasisLayer]) -> None:
    layers = list(layers)
    first = layers[0]
    for layer in layers[1:]:
        if layer.bank is not first.bank:
            raise ValueError("basis-mapped layers of one model must share one BasisBank; found two different banks")
        mine = (layer.coef_bits, layer.coef_quant, layer.coef_scale)
        theirs = (first.coef_bits, first.coef_quant, first.coef_scale)
        if mine != theirs:
            raise ValueError(
                f"basis-mapped layers must share coef_bits/coef_quant/coef_scale to be rebuilt together; "
                f"found {theirs} and {mine}"
            )


# --------------------------------------------------------------------------------------------------------------
# The bank on the model's root.
# --------------------------------------------------------------------------------------------------------------
BANK_KEY = "basisn_bank.weight"  # the bank's one entry in state_dict, whatever the root
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _is_container(model: nn.Module) -> bool:
    return isinstance(model, CONTAINERS)


def sync_bank(model: nn.Module) -> BasisBank:
    """The root's bank, re-pointed at the basis Parameter the root holds (see BasisBank.follow_root): call it
    before reading a basis-mapped model's bank directly."""
    bank: BasisBank = model.basisn_bank
    bank.follow_root()
    return bank


def _rebuild_state(bank: BasisBank) -> tuple:
    """What the rebuilt weights depend on: every tensor they are made of (identity, storage, in-place version),
    the layers' settings and layouts, and the autocast state. Equal states give equal weights."""
    device_type = bank.weight.device.type
    autocast = torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)
    tensors = [bank.weight]
    settings = [bank.basis_bits, autocast and torch.get_autocast_dtype(device_type)]
    for layer in bank.layers:
        tensors += [layer.coef, layer.scale] + ([] if layer.segment_group is None else [layer.segment_group])
        settings += [id(layer), layer.coef_bits, layer.coef_quant, layer.coef_scale, getattr(layer, "channels_last", 0)]
    return tuple(settings) + tuple((id(t), t.data_ptr(), t._version, t.dtype, t.device) for t in tensors), tensors


def _rebuild_before_forward(model: nn.Module, args: object) -> None:
    """Rebuild every layer's weight for this pass. In eval mode without autograd the weights of the last such
    pass are reused while nothing they depend on changed (optimizer steps, load_state_dict, .to() all change
    a parameter's version or storage); in training, or with autograd on, they are always rebuilt."""
    bank = sync_bank(model)
    _refresh_pruned(bank.layers)
    if model.training or torch.is_grad_enabled():
        bank.__dict__.pop("_eval_weights", None)
        weights = rebuild_layer_weights(bank.layers)
    else:
        state, tensors = _rebuild_state(bank)
        cached = bank.__dict__.get("_eval_weights")
        if cached is None or cached[0] != state:
            # the cache holds the tensors of `state` too, so their ids cannot be reused while it is kept
            cached = (state, rebuild_layer_weights(bank.layers), tensors)
            bank.__dict__["_eval_weights"] = cached
        weights = cached[1]
    for layer, weight in zip(bank.layers, weights):
        layer.__dict__["_rebuilt"] = weight


def _forget_after_forward(model: nn.Module, args: object, output: object) -> None:
    for layer in model.basisn_bank.layers:  # free this pass's weights (their graph is held by the output)
        layer.__dict__["_rebuilt"] = None


def _load_bank_pre_hook(model: nn.Module, state_dict: dict, prefix: str, local_metadata: dict, *args: object) -> None:
    """load_state_dict(assign=True) on a container root: nn.Module would setattr the dotted name, which it
    refuses; assign the basis Parameter here instead (and let the post-hook drop the key from `missing`)."""
    key = prefix + BANK_KEY
    if local_metadata.get("assign_to_params_buffers") and key in state_dict:
        old = model._parameters[BANK_KEY]
        model._parameters[BANK_KEY] = nn.Parameter(state_dict.pop(key), requires_grad=old.requires_grad)
        model.__dict__["_basisn_bank_assigned"] = True


def _load_bank_post_hook(model: nn.Module, incompatible_keys: object) -> None:
    """load_state_dict post-hook of a container root: it loads "basisn_bank.weight" into its own Parameter, but
    nn.Module's check of unexpected keys looks for a child named "basisn_bank"."""
    unexpected = incompatible_keys.unexpected_keys
    unexpected[:] = [key for key in unexpected if not key.endswith(BANK_KEY)]
    if model.__dict__.pop("_basisn_bank_assigned", False):
        missing = incompatible_keys.missing_keys
        missing[:] = [key for key in missing if not key.endswith(BANK_KEY)]


def attach_bank(model: nn.Module, bank: BasisBank) -> nn.Module:
    """Register `bank` on the model's root and rebuild all its basis layers once per forward pass.

    `to_basisn` calls this; call it yourself for a model you built from BasisConv2d/BasisLinear directly.

    An ordinary root registers the bank as the submodule `basisn_bank`. A Sequential / ModuleList / ModuleDict
    root iterates and indexes its submodules, so there the bank is held as a plain attribute (`model.basisn_bank`,
    not a child: `len`, indexing, iteration and the Sequential's forward are unchanged) and its basis Parameter is
    registered on the root itself under the same key, "basisn_bank.weight": `state_dict`, `parameters()`, `.to()`
    and optimizers see it exactly once, as for any other root. A ModuleList / ModuleDict has no forward, so its
    layers each rebuild their own weight when called.
    """
    layers = [layer for _, layer in basis_layers(model)]
    if not layers:
        raise ValueError("model has no basis-mapped layer (BasisConv2d/BasisLinear) to attach a bank to")
    foreign = [layer for layer in layers if layer.bank is not bank]
    if foreign:
        raise ValueError(f"{len(foreign)} basis layer(s) of the model use another bank than the one attached")
    _check_shared_settings(layers)
    if _is_container(model):
        object.__setattr__(model, "basisn_bank", bank)  # not a child: the container does not iterate it
        model._parameters[BANK_KEY] = bank.weight  # a dotted key nn.Module's own setters would refuse
        bank.__dict__["_container_root"] = model  # a plain reference (deepcopy keeps it pointing at the copy)
        if _load_bank_post_hook not in model._load_state_dict_post_hooks.values():
            model.register_load_state_dict_pre_hook(_load_bank_pre_hook)
            model.register_load_state_dict_post_hook(_load_bank_post_hook)
    else:
        model.basisn_bank = bank
    bank.layers = layers
    detach_bank_hooks(model)
    model.register_forward_pre_hook(_rebuild_before_forward)
    model.register_forward_hook(_forget_after_forward, always_call=True)
    return model


def detach_bank(model: nn.Module) -> None:
    """Undo attach_bank: remove the rebuild hooks and the bank (from either place attach_bank put it)."""
    detach_bank_hooks(model)
    for hooks in (model._load_state_dict_pre_hooks, model._load_state_dict_post_hooks):
        for key, hook in list(hooks.items()):
            if getattr(hook, "hook", hook) in (_load_bank_pre_hook, _load_bank_post_hook):
                del hooks[key]
    model._parameters.pop(BANK_KEY, None)
    bank = model.__dict__.get("basisn_bank") or model._modules.get("basisn_bank")
    if bank is not None:
        bank.__dict__.pop("_container_root", None)
    if "basisn_bank" in model._modules:
        del model._modules["basisn_bank"]
    model.__dict__.pop("basisn_bank", None)


def detach_bank_hooks(model: nn.Module) -> None:
    """Remove the rebuild hooks that attach_bank installed (to_dense and re-attaching use it)."""
    for hooks, ours in (
        (model._forward_pre_hooks, _rebuild_before_forward),
        (model._forward_hooks, _forget_after_forward),
    ):
        for key in [key for key, hook in hooks.items() if hook is ours]:
            del hooks[key]
            model._forward_hooks_always_called.pop(key, None)


# --------------------------------------------------------------------------------------------------------------
# nn.MultiheadAttention with basis-mapped projections.
# --------------------------------------------------------------------------------------------------------------
MHA_PROJECTIONS = ("in_proj", "q_proj", "k_proj", "v_proj")  # child BasisLinear -> the Parameter it replaces


class BasisMultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention whose input projection is a basis-mapped layer (its out_proj is a BasisLinear too).

    nn.MultiheadAttention keeps its input projection as a bare Parameter (`in_proj_weight`, or `q_proj_weight`,
    `k_proj_weight`, `v_proj_weight` when the key/value sizes differ) that its forward passes to
    F.multi_head_attention_forward. Here that Parameter is a child BasisLinear (`in_proj`, or `q_proj`/`k_proj`/
    `v_proj`, no bias: `in_proj_bias` stays a Parameter of this module) and the attribute is a read-only
    property returning its rebuilt weight, so nn.MultiheadAttention's own forward, fast path included, runs
    unchanged. Built from a dense module by `from_dense`, never directly.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise TypeError("BasisMultiheadAttention is built by basisn.to_basisn (from_dense), not directly")

    @classmethod
    def from_dense(cls, source: nn.MultiheadAttention, projections: dict[str, BasisLinear]) -> BasisMultiheadAttention:
        """A copy of `source` (sharing its other parameters and its out_proj) with `projections` as children."""
        new = cls.__new__(cls)
        new.__dict__.update(source.__dict__)  # settings, hooks, training flag: the source is replaced by `new`
        dense_weights = {f"{p}_weight" for p in MHA_PROJECTIONS}
        new.__dict__["_parameters"] = {k: v for k, v in source._parameters.items() if k not in dense_weights}
        new.__dict__["_modules"] = dict(source._modules) | projections
        return new

    def _projection(self, name: str) -> Tensor | None:
        layer = self._modules.get(name)
        return None if layer is None else layer.weight

    in_proj_weight = property(lambda self: self._projection("in_proj"), doc="The rebuilt (3E x E) in-projection.")
    q_proj_weight = property(lambda self: self._projection("q_proj"), doc="The rebuilt query projection.")
    k_proj_weight = property(lambda self: self._projection("k_proj"), doc="The rebuilt key projection.")
    v_proj_weight = property(lambda self: self._projection("v_proj"), doc="The rebuilt value projection.")

    def __setattr__(self, name: str, value: object) -> None:
        if name in {f"{p}_weight" for p in MHA_PROJECTIONS}:
            raise AttributeError(
                f"BasisMultiheadAttention.{name} is rebuilt from the shared basis and cannot be assigned; change the "
                f"coefficients of its child layer, or use basisn.to_dense for an ordinary nn.MultiheadAttention"
            )
        super().__setattr__(name, value)

    def to_dense(self, weights: dict[str, Tensor]) -> nn.MultiheadAttention:
        """An ordinary nn.MultiheadAttention with `weights` (child name -> weight) as its projection Parameters."""
        plain = nn.MultiheadAttention.__new__(nn.MultiheadAttention)
        plain.__dict__.update(self.__dict__)
        names = ("in_proj",) if self._qkv_same_embed_dim else ("q_proj", "k_proj", "v_proj")
        parameters: dict[str, nn.Parameter | None] = {f"{p}_weight": None for p in MHA_PROJECTIONS}
        for name in names:
            parameters[f"{name}_weight"] = nn.Parameter(weights[name])
        order = names + tuple(p for p in MHA_PROJECTIONS if p not in names)  # nn.MultiheadAttention's order
        plain.__dict__["_parameters"] = {f"{p}_weight": parameters[f"{p}_weight"] for p in order} | self._parameters
        plain.__dict__["_modules"] = {k: v for k, v in self._modules.items() if k not in MHA_PROJECTIONS}
        return plain
