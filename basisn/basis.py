"""The global basis: segmenting weights, the SVD decomposition, and converting models to and from BasisN.

Decomposition (docs/method.md §1.2): every output row of every basis-mapped layer is normalised (its norm kept as the
layer's per-output scale), cut into segments of length m, and all segments of all layers are stacked. The top-n
right singular vectors of that stack are the least-squares-optimal shared linear basis; coefficients follow by
least squares against the *quantized* basis, then are quantized, then each row's scale is refitted.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from basisn.atomic import atomic_torch_save
from basisn.layers import (
    COEF_SCALES,
    DYNAMIC,
    MHA_PROJECTIONS,
    QUANTIZERS,
    UNASSIGNED,
    BasisBank,
    BasisConv2d,
    BasisLayer,
    BasisLinear,
    BasisMultiheadAttention,
    attach_bank,
    check_bits,
    check_positive_int,
    detach_bank,
    random_orthonormal,
    rebuild_layer_weights,
    sync_bank,
)

INITS = ("svd", "random", "none")
MAX_SEGMENT_LEN = 8192  # as basisn.params.MAX_SEGMENT_LEN: 8 * 8192^2 bytes = 0.5 GiB for the m x m system
# how each segment chooses its basis group when groups > 1 (docs/method.md §1.3)
ASSIGNMENTS = ("fixed", "learned", "dynamic")
CHECKPOINT_FORMAT = "basisn-model/1"


# --------------------------------------------------------------------------------------------------------------
# Segmenting.
# --------------------------------------------------------------------------------------------------------------
def weight_rows(weight: Tensor) -> Tensor:
    """Weight as O x L rows (conv kernels unrolled in PyTorch's (C_in/groups, kh, kw) order)."""
    return weight.reshape(weight.shape[0], -1)


def segment_rows(rows: Tensor, segment_len: int) -> Tensor:
    """O x L rows -> O x S x m segments, the last one zero-padded to m."""
    out_rows, row_len = rows.shape
    segments = math.ceil(row_len / segment_len)
    padded = rows.new_zeros(out_rows, segments * segment_len)
    padded[:, :row_len] = rows
    return padded.reshape(out_rows, segments, segment_len)


# --------------------------------------------------------------------------------------------------------------
# Decomposition.
# --------------------------------------------------------------------------------------------------------------
def top_singular_basis(segments: Tensor, n: int) -> Tensor:
    """Top-n right singular vectors (n x m rows) of a stack of segments, via the m x m Gram matrix in float64.

    Eigen-decomposing X^T X costs O(N m^2) for N segments, which keeps ResNet-50 (200k segments) well under a
    second, where a full SVD of X would not be needed anyway.
    """
    x = segments.to(torch.float64)
    gram = x.T @ x
    _, eigenvectors = torch.linalg.eigh(gram)  # ascending eigenvalues
    basis = eigenvectors[:, -n:].flip(1).T  # descending
    return basis.contiguous()


def assign_groups(segments: Tensor, basis: Tensor, groups: int, iterations: int) -> tuple[Tensor, Tensor]:
    """Group-sparse basis: each segment uses one of `groups` groups of n/groups basis vectors.

    Our reading of the paper's "training to enhance computation parallelization" (docs/method.md §1.1): start from the
    SVD basis dealt round-robin into groups (so every group gets strong and weak directions), then alternate
    (k-subspace clustering): assign each segment to the group that reconstructs it best, refit each group as the
    top singular vectors of its segments. Returns (basis with group g in rows [g·k, (g+1)·k), group per segment).
    """
    n, _ = basis.shape
    group_size = n // groups
    x = segments
    group_bases = [basis[g::groups] for g in range(groups)]
    assignment = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    for _ in range(iterations):
        captured = torch.stack([(x @ b.T).square().sum(1) for b in group_bases], dim=1)  # (N, G)
        new_assignment = captured.argmax(1)
        if torch.equal(new_assignment, assignment) and _ > 0:
            break
        assignment = new_assignment
        for g in range(groups):
            members = x[assignment == g]
            if members.shape[0] >= group_size:  # an (almost) empty group keeps its vectors
                group_bases[g] = top_singular_basis(members, group_size).to(x.dtype)
    captured = torch.stack([(x @ b.T).square().sum(1) for b in group_bases], dim=1)
    return torch.cat(group_bases), captured.argmax(1)


def least_squares_coefficients(segments: Tensor, basis: Tensor) -> Tensor:
    """argmin_A ||X - A B||: coefficients of every segment against a (not necessarily orthonormal) basis."""
    b = basis.to(torch.float64)
    gram = b @ b.T
    ridge = 1e-12 * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    projections = (segments @ basis.to(segments.dtype).T).to(torch.float64)  # the big product in input precision
    return torch.linalg.solve(gram + ridge, projections.T).T


# --------------------------------------------------------------------------------------------------------------
# Model conversion.
# --------------------------------------------------------------------------------------------------------------
def _validate(
    model, n_basis, segment_len, coef_bits, coef_quant, basis_bits, groups, exclude, coef_scale, init, assignment
):
    if not isinstance(model, nn.Module):
        raise ValueError(f"model={type(model).__name__} is not allowed; pass a torch.nn.Module")
    check_positive_int("n_basis", n_basis)
    check_positive_int("segment_len", segment_len)
    if segment_len > MAX_SEGMENT_LEN:
        raise ValueError(
            f"segment_len={segment_len} is too large; allowed: 1 <= segment_len <= {MAX_SEGMENT_LEN} (the basis is fit "
            "from an m x m float64 system: 8 * m^2 bytes, and every weight row is padded to a multiple of m)"
        )
    if n_basis > segment_len:
        raise ValueError(f"n_basis={n_basis} exceeds segment_len={segment_len}; allowed: 1 <= n_basis <= segment_len")
    check_bits("coef_bits", coef_bits)
    check_bits("basis_bits", basis_bits)
    if coef_quant not in QUANTIZERS:
        raise ValueError(f"coef_quant={coef_quant!r} is not a quantizer; allowed: {', '.join(QUANTIZERS)}")
    if coef_scale not in COEF_SCALES:
        raise ValueError(f"coef_scale={coef_scale!r} is not allowed; allowed: {', '.join(COEF_SCALES)}")
    check_positive_int("groups", groups)
    if n_basis % groups:
        raise ValueError(f"groups={groups} does not divide n_basis={n_basis}; allowed: a divisor of n_basis")
    if init not in INITS:
        raise ValueError(f"init={init!r} is not allowed; allowed: {', '.join(INITS)}")
    if assignment not in ASSIGNMENTS:
        raise ValueError(f"assignment={assignment!r} is not allowed; allowed: {', '.join(ASSIGNMENTS)}")
    if isinstance(exclude, str):
        raise ValueError(f"exclude={exclude!r} is a string; pass a list/tuple of module names, e.g. [{exclude!r}]")
    if hasattr(model, "basisn_bank"):
        raise ValueError("model is already basis-mapped (it has a basisn_bank); convert the original model")
    names = {name for name, _ in model.named_modules() if name}
    for name in exclude:
        if name not in names:
            close = sorted(n for n in names if "." not in n)[:12]
            raise ValueError(f"exclude name {name!r} matches no module; top-level modules are: {', '.join(close)}")


def _is_excluded(name: str, exclude: tuple[str, ...]) -> bool:
    return any(name == e or name.startswith(e + ".") for e in exclude)


# --------------------------------------------------------------------------------------------------------------
# What to convert: the plan.
# --------------------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Unit:
    """One dense weight that becomes one basis-mapped layer (one set of coefficients)."""

    name: str  # report name: the module's name, or "<attention>.in_proj" for a MultiheadAttention projection
    kind: str  # "conv" | "linear"
    source: nn.Module  # the nn.Conv2d / nn.Linear, or the nn.MultiheadAttention that holds the weight
    weight: Tensor
    bias: Tensor | None
    places: list[str]  # module names to install the layer at (a module used at two places is one unit)
    tied: list[_Unit] = field(default_factory=list)  # other units whose weight is the same Parameter
    layer: BasisLayer | None = None


@dataclass
class _Plan:
    units: list[_Unit]  # coefficient owners, in module order
    attention: list[tuple[list[str], nn.MultiheadAttention, dict[str, _Unit]]]  # (places, module, projections)
    left_dense: list[dict]


class ConversionReport(list):
    """to_basisn's report: one dict per basis-mapped layer (a list, as before), plus `left_dense` and `shared`.

    `shared` maps a layer's name to the other module names using its coefficients (a module used at two
    places, or tied weights). `left_dense` has one dict (name, type, reason) per module that holds a weight (a
    parameter of two or more dimensions) and was left dense: excluded, a layer type that is not basis-mapped
    (Conv1d, Conv3d, transposed convolutions, recurrent layers, embeddings, ...), a weight tied to a module that
    stays dense, or a parameter that is not a layer's weight (a class token, a position embedding, a
    relative-position bias table). Modules with only 1-D parameters (normalisation scales and shifts) are
    element-wise and not listed.
    """

    def __init__(self, rows: list[dict], left_dense: list[dict], shared: dict[str, list[str]]) -> None:
        super().__init__(rows)
        self.left_dense = left_dense
        self.shared = shared  # layer name -> the other module names that use its coefficients (tied weights)

    def notes(self) -> list[str]:
        """One line per layer left dense."""
        return [f"{row['name'] or '(root)'} ({row['type']}) left dense: {row['reason']}" for row in self.left_dense]


def _plain_layer_kind(module: nn.Module) -> str | None:
    """ "conv"/"linear" for an nn.Conv2d/nn.Linear (or a subclass with the same forward and parameters), else None."""
    if isinstance(module, nn.Conv2d):
        same = type(module).forward is nn.Conv2d.forward and type(module)._conv_forward is nn.Conv2d._conv_forward
        kind = "conv"
    elif isinstance(module, nn.Linear):
        same, kind = type(module).forward is nn.Linear.forward, "linear"
    else:
        return None
    if not same or set(module._parameters) - {"weight", "bias"} or parametrize.is_parametrized(module):
        return None
    if isinstance(module.weight, nn.parameter.UninitializedParameter):
        return None
    return kind


def _dense_reason(module: nn.Module, weights: list[str]) -> str:
    """Why a module holding a weight is not basis-mapped (one phrase, for the report)."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "a transposed convolution: only nn.Conv2d, nn.Linear and nn.MultiheadAttention are basis-mapped"
    if isinstance(module, nn.modules.conv._ConvNd) and not isinstance(module, nn.Conv2d):
        return f"a {type(module).__name__}: only 2-D convolutions (nn.Conv2d), nn.Linear and attention are mapped"
    if isinstance(module, nn.RNNBase | nn.RNNCellBase):
        return "recurrent weights: not basis-mapped (only nn.Conv2d, nn.Linear and nn.MultiheadAttention are)"
    if isinstance(module, nn.Embedding | nn.EmbeddingBag):
        return "an embedding table (a lookup, not a matmul): not basis-mapped"
    if isinstance(module, nn.MultiheadAttention):
        return "a subclass of nn.MultiheadAttention (its forward may differ): only nn.MultiheadAttention is mapped"
    if isinstance(module, nn.Conv2d | nn.Linear):
        if parametrize.is_parametrized(module):
            return "a parametrized weight (torch.nn.utils.parametrize): not basis-mapped"
        if isinstance(module.weight, nn.parameter.UninitializedParameter):
            return "a lazy layer not initialised yet (run one forward pass before to_basisn)"
        extra = sorted(set(module._parameters) - {"weight", "bias"})
        if extra:  # e.g. torch.nn.utils.weight_norm's weight_g / weight_v
            return f"parameters {', '.join(extra)} beside weight/bias (e.g. weight_norm): not basis-mapped"
        base = "Conv2d" if isinstance(module, nn.Conv2d) else "Linear"
        return f"a subclass of nn.{base} with its own forward: not basis-mapped"
    return f"parameter(s) {', '.join(weights)} are not a Conv2d/Linear/attention weight: kept as they are"


_AttentionPlan = list[tuple[list[str], nn.MultiheadAttention, dict[str, _Unit]]]  # (places, module, projections)


@dataclass
class _DenseLog:
    """The modules left dense, each once, under its first name: the report's `left_dense`."""

    places: dict[int, list[str]]  # id of a module -> its names, in module order
    rows: list[dict] = field(default_factory=list)
    ids: set[int] = field(default_factory=set)

    def first_name(self, module: nn.Module) -> str:
        return self.places[id(module)][0]

    def keep(self, module: nn.Module, reason: str) -> None:
        if id(module) not in self.ids:
            self.ids.add(id(module))
            self.rows.append(dict(name=self.first_name(module), type=type(module).__name__, reason=reason))


def _plan(model: nn.Module, exclude: tuple[str, ...]) -> _Plan:
    """The units to convert, the attention modules to rebuild around them, and every weight left dense (why)."""
    places: dict[int, list[str]] = {}
    modules: dict[int, nn.Module] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        places.setdefault(id(module), []).append(name)
        modules[id(module)] = module
    holders: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in modules.values():
        for pname, param in module._parameters.items():
            if param is not None:
                holders.setdefault(id(param), []).append((module, pname))
    dense = _DenseLog(places)
    candidates, attention = _candidates(modules, places, exclude, dense)
    units = _untied_or_shared(candidates, holders, dense)
    kept_attention = []
    for names, module, projections in attention:
        tied = [m for u in projections.values() for m, _ in holders[id(u.weight)] if m is not module]
        if tied:
            partner = dense.first_name(tied[0])
            dense.keep(module, f"an attention projection tied to {partner!r}; kept dense to keep the tie")
        else:
            kept_attention.append((names, module, projections))
            units.extend(projections.values())
    order = {key: i for i, key in enumerate(modules)}
    units.sort(key=lambda u: order[id(u.source)])  # stable: q, k, v projections keep their order
    return _Plan(units, kept_attention, dense.rows)


def _candidates(
    modules: dict[int, nn.Module], places: dict[int, list[str]], exclude: tuple[str, ...], dense: _DenseLog
) -> tuple[dict[int, _Unit], _AttentionPlan]:
    """A unit per plain Conv2d/Linear (by id of the module), the attention modules with a unit per projection;
    every other module holding a weight, and every excluded one, goes to `dense`. Ties are not looked at yet."""
    candidates: dict[int, _Unit] = {}
    attention: _AttentionPlan = []
    for key, module in modules.items():
        names = places[key]
        excluded = [e for e in exclude for n in names if _is_excluded(n, (e,))]
        kind = _plain_layer_kind(module)
        is_attention = type(module) is nn.MultiheadAttention
        weights = [p for p, v in module._parameters.items() if v is not None and v.dim() >= 2]
        if isinstance(module, parametrize.ParametrizationList):
            continue  # reported on the parametrized module
        if parametrize.is_parametrized(module):
            weights += [f"{p} (parametrized)" for p in module.parametrizations]
        if excluded and (kind or is_attention or weights):
            dense.keep(module, f"excluded (exclude contains {excluded[0]!r})")
        elif kind:
            candidates[key] = _Unit(names[0], kind, module, module.weight, module.bias, list(names))
        elif is_attention:
            projections = {}
            for proj in ("in_proj", "q_proj", "k_proj", "v_proj"):
                weight = module._parameters.get(f"{proj}_weight")
                if weight is not None:
                    projections[proj] = _Unit(f"{names[0]}.{proj}", "linear", module, weight, None, [])
            attention.append((list(names), module, projections))
        elif weights:
            dense.keep(module, _dense_reason(module, weights))
    return candidates, attention


def _untied_or_shared(
    candidates: dict[int, _Unit], holders: dict[int, list[tuple[nn.Module, str]]], dense: _DenseLog
) -> list[_Unit]:
    """The candidate units that own their coefficients, each with the units tied to it in `tied`.

    Ties: a weight Parameter held by two modules. Between plain layers of one shape: one set of coefficients.
    With anything else (an embedding, an excluded layer, an attention projection): all of them stay dense.
    """
    units: list[_Unit] = []
    grouped: set[int] = set()
    for key, unit in candidates.items():
        if key in grouped:
            continue
        others = [m for m, _ in holders[id(unit.weight)] if m is not unit.source]
        group = [unit] + [candidates.get(id(m)) for m in others]
        sources = {id(unit.source)} | {id(m) for m in others}
        bias_partners = [
            m
            for u in group
            if u is not None and u.bias is not None
            for m, _ in holders[id(u.bias)]
            if id(m) not in sources
        ]
        ok = not bias_partners and all(
            u is not None and type(u.source) is type(unit.source) and u.source.weight.shape == unit.weight.shape
            for u in group
        )
        grouped.update(sources)
        if ok:
            unit.tied = group[1:]
            units.append(unit)
            continue
        involved = [unit.source, *others, *bias_partners]
        for module in [unit.source, *others]:
            partner = next(dense.first_name(m) for m in involved if m is not module)
            dense.keep(module, f"weight or bias tied to {partner!r}, which is not mapped the same way; kept dense")
    return units


def _check_plan(model: nn.Module, plan: _Plan, init: str) -> None:
    """Refuse a plan with nothing to convert, one that would replace the root, or meta weights to decompose."""
    units = plan.units
    if not units:
        skipped = "; ".join(f"{r['name']} ({r['type']}): {r['reason']}" for r in plan.left_dense[:3])
        raise ValueError(
            "model has no nn.Conv2d / nn.Linear / nn.MultiheadAttention to convert (after exclude)"
            + (f"; left dense: {skipped}" if skipped else "")
        )
    roots = [unit for unit in units if "" in unit.places] + [m for names, m, _ in plan.attention if "" in names]
    if roots:
        raise ValueError(
            f"model is itself a {type(model).__name__}, which to_basisn would have to replace; wrap it in a "
            "module (or an nn.Sequential) to convert it"
        )
    if init != "none" and any(unit.weight.is_meta for unit in units):
        raise ValueError(
            f"model is on the meta device: its weights hold no values to decompose (init={init!r}); use "
            "init='none' for the structure only (then load weights), or build the model on a real device"
        )


def _new_layer(unit: _Unit, settings: dict) -> BasisLayer:
    if unit.kind == "conv":
        m = unit.source
        return BasisConv2d(
            m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
            m.bias is not None, m.padding_mode, **settings,
        )  # fmt: skip
    out_features, in_features = unit.weight.shape
    layer = BasisLinear(in_features, out_features, unit.bias is not None, **settings)
    if isinstance(unit.source, nn.Linear):
        layer.dense_type = type(unit.source)  # to_dense gives back e.g. MultiheadAttention's own Linear subclass
    return layer


def _share_coefficients(owner: _Unit, member: _Unit) -> None:
    """A tied weight: `member` reads the coefficients, scales (and groups) of `owner`, one set for both (and the
    bias too when the two shared it)."""
    member.layer.coef, member.layer.scale = owner.layer.coef, owner.layer.scale
    if owner.layer.segment_group is not None:
        member.layer.segment_group = owner.layer.segment_group
    if member.bias is not None and member.bias is owner.bias:
        member.layer.bias = owner.layer.bias


def conversion_bytes(weights: list[Tensor], n_basis: int, segment_len: int) -> int:
    """About the peak memory a conversion needs: the weights' rows cut into segments of `segment_len` (padded),
    held about three times (normalized, stacked, projected; float64 for the fit), the m x m float64 Gram system
    with its eigendecomposition's work space (about four of them), and the n coefficients of every segment."""
    segments = sum(w.shape[0] * math.ceil(w[0].numel() / segment_len) for w in weights if w.dim() > 0)
    return 3 * 8 * segments * segment_len + 4 * 8 * segment_len**2 + 8 * segments * n_basis


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on every platform: then no check
        return None


def check_memory(units: list, n_basis: int, segment_len: int) -> None:
    """Refuse, before any work, a conversion that needs more memory than the machine has (one line, with sizes)."""
    need, have = conversion_bytes([u.weight for u in units], n_basis, segment_len), _physical_memory()
    if have is not None and need > have:
        raise ValueError(
            f"to_basisn(segment_len={segment_len}, n_basis={n_basis}) needs about {need / 2**30:.1f} GiB for these "
            f"weights, more than this machine's {have / 2**30:.1f} GiB; allowed: a smaller segment_len"
        )


def to_basisn(
    model: nn.Module,
    n_basis: int,
    segment_len: int = 128,
    coef_bits: int | None = 4,
    coef_quant: str = "uniform",
    basis_bits: int | None = 8,
    groups: int = 1,
    exclude: tuple[str, ...] | list[str] = (),
    *,
    coef_scale: str = "channel",
    assignment: str = "fixed",
    init: str = "svd",
    group_iterations: int = 10,
    seed: int = 0,
) -> tuple[nn.Module, ConversionReport]:
    """Replace every nn.Conv2d / nn.Linear / nn.MultiheadAttention projection of `model` (in place) by its
    basis-mapped version, all sharing one bank.

    Args mirror docs/method.md §1.1: `n_basis` n, `segment_len` m (= crossbar rows), `coef_bits`/`coef_quant` the
    coefficient quantizer (None: off), `basis_bits` the basis quantizer (None: off), `groups` G of the
    group-sparse option, `exclude` module names kept dense (a name also excludes everything under it),
    `coef_scale` "channel" or "layer" range of the coefficient quantizer, `init` "svd" (the decomposition),
    "random" (a random orthonormal basis, for comparison) or "none" (leave random values: loading a checkpoint;
    the only init that works on the meta device, whose tensors hold no values). `assignment` (groups > 1 only):
    "fixed" gives each segment the group that reconstructs it best (`assign_groups`), once; "learned" starts from
    the same basis and coefficients but leaves every segment unassigned (segment_group -1: all n coefficients
    trainable), for the fine-tune to choose its group and harden it; "dynamic" fits every group of every segment
    and marks it -2: each pass uses its group of largest coefficient norm until the fine-tune hardens that choice
    (basisn.parallel, docs/method.md §1.3).

    Any root works, nn.Sequential / nn.ModuleList included (see basisn.layers.attach_bank for where the bank
    goes). A module used at two places is one basis-mapped layer at both; two Linear (or Conv2d) layers sharing
    one weight Parameter share one set of coefficients; a weight tied to a module that is not mapped keeps both
    dense. nn.MultiheadAttention becomes basisn.layers.BasisMultiheadAttention (same forward, fast path kept).

    Returns the model and a ConversionReport: one dict per basis-mapped layer (name, kind, weight shape,
    segments, coefficients (active), weights, relative reconstruction error with and without quantization,
    and `report.left_dense` naming every weight left dense and why (`report.notes()`: one line each), and
    `report.shared` the modules that use one layer's coefficients at several places.
    """
    exclude = exclude if isinstance(exclude, str) else tuple(exclude)  # a bare string is refused by _validate
    _validate(
        model, n_basis, segment_len, coef_bits, coef_quant, basis_bits, groups, exclude, coef_scale, init, assignment
    )
    # 1. What becomes a basis-mapped layer (and what stays dense, why).
    plan = _plan(model, exclude)
    _check_plan(model, plan, init)
    if init != "none":
        check_memory(plan.units, n_basis, segment_len)
    # 2. The new layers, then their coefficients, fitted once the bank holds its final (quantized) basis.
    reference = plan.units[0].weight
    bank = BasisBank(n_basis, segment_len, basis_bits, groups).to(device=reference.device, dtype=reference.dtype)
    _new_layers(plan.units, dict(bank=bank, coef_bits=coef_bits, coef_quant=coef_quant, coef_scale=coef_scale))
    errors = _decompose(plan.units, bank, init, assignment, group_iterations, seed)
    # 3. Swap the modules in and register the bank once.
    _install_layers(model, plan, bank)
    bank.config = dict(
        n_basis=n_basis, segment_len=segment_len, coef_bits=coef_bits, coef_quant=coef_quant, basis_bits=basis_bits,
        groups=groups, exclude=list(exclude), coef_scale=coef_scale, assignment=assignment,
    )  # fmt: skip
    shared = {
        unit.name: unit.places[1:] + [name for member in unit.tied for name in member.places]
        for unit in plan.units
        if len(unit.places) > 1 or unit.tied
    }
    return model, ConversionReport(_report(plan.units, errors), plan.left_dense, shared)


# --------------------------------------------------------------------------------------------------------------
# Decomposition: the shared basis, the coefficients (quantized), the scales, the errors.
# --------------------------------------------------------------------------------------------------------------
def _decompose(
    units: list[_Unit], bank: BasisBank, init: str, assignment: str, group_iterations: int, seed: int
) -> list[tuple[float, float]] | None:
    """Fit the bank's basis and the coefficients, groups and scales of the units' new layers (in place).

    Returns (relative error with quantization, without it) per unit, or None for init="none" (nothing fitted).
    """
    layers = [unit.layer for unit in units]
    assigned_later = assignment in ("learned", "dynamic") and bank.groups > 1  # by the fine-tune, not here
    pending = UNASSIGNED if assignment == "learned" else DYNAMIC  # the segment_group value until it hardens
    if init == "none":
        if assigned_later:  # the structure only (a checkpoint loads over it): unassigned like a fresh decomposition
            for layer in layers:
                layer.segment_group.fill_(pending)
        return None
    # Stack the normalised segments of all layers (float32; only the m x m and n x n systems need float64).
    rows = [weight_rows(unit.weight.detach().float()) for unit in units]
    norms = [r.norm(dim=1) for r in rows]
    segments = [segment_rows(r / n.clamp_min(1e-30)[:, None], bank.segment_len) for r, n in zip(rows, norms)]
    stacked = torch.cat([s.reshape(-1, bank.segment_len) for s in segments])
    del segments
    basis, segment_group = _fit_basis(stacked, bank, init, group_iterations, seed)
    with torch.no_grad():
        bank.weight.copy_(basis)
        coefs, residual = _fit_coefficients(stacked, basis, bank, segment_group, assignment)
        if assigned_later:  # the fixed decomposition as the start, every group open to the fine-tune
            segment_group = torch.full((stacked.shape[0],), pending, dtype=torch.long, device=stacked.device)
        start = 0
        for layer in layers:
            count = layer.out_rows * layer.segments
            layer.coef.copy_(coefs[start : start + count].reshape(layer.coef.shape))
            if segment_group is not None:
                layer.segment_group.copy_(segment_group[start : start + count].reshape(layer.segment_group.shape))
            start += count
        del coefs
        quantized_weights = _refit_scales(layers, rows)
        return _errors(layers, rows, norms, quantized_weights, residual)


def _fit_basis(
    stacked: Tensor, bank: BasisBank, init: str, group_iterations: int, seed: int
) -> tuple[Tensor, Tensor | None]:
    """The shared basis (float32, n x m) for the stacked segments, and the group of each segment (groups > 1)."""
    if init == "svd":
        basis = top_singular_basis(stacked, bank.n_basis)
    else:
        generator = torch.Generator().manual_seed(seed)
        basis = random_orthonormal(bank.n_basis, bank.segment_len, generator).to(stacked)
    basis = basis.float()
    segment_group = None
    if bank.groups > 1:
        basis, segment_group = assign_groups(stacked, basis, bank.groups, group_iterations)
    return basis, segment_group


def _fit_coefficients(
    stacked: Tensor, basis: Tensor, bank: BasisBank, segment_group: Tensor | None, assignment: str
) -> tuple[Tensor, Tensor]:
    """Least-squares coefficients of every segment against the bank's quantized basis, group by group, and the
    residual of each segment's (unquantized) projection on its group."""
    quantized_basis = bank.quantized().float()
    group_size = bank.n_basis // bank.groups
    coefs = torch.zeros(stacked.shape[0], bank.n_basis, device=stacked.device)
    residual = torch.zeros(stacked.shape[0], device=stacked.device)  # of the unquantized projection
    for g in range(bank.groups):
        members = slice(None) if segment_group is None else segment_group == g
        block = slice(g * group_size, (g + 1) * group_size)
        # dynamic: every group holds its own fit of every segment, so a group's norm is how well it
        # reconstructs the segment (the group bases are orthonormal)
        fitted = slice(None) if assignment == "dynamic" else members
        coefs[fitted, block] = least_squares_coefficients(stacked[fitted], quantized_basis[block]).float()
        projected = (stacked[members] @ basis[block].T) @ basis[block]  # the basis rows are orthonormal
        residual[members] = (stacked[members] - projected).square().sum(1)
    return coefs, residual


# --------------------------------------------------------------------------------------------------------------
# Module replacement: the new layers, installed in place of the dense modules.
# --------------------------------------------------------------------------------------------------------------
def _new_layers(units: list[_Unit], settings: dict) -> None:
    """Give every unit (and every unit tied to it) its basis-mapped `layer`, on the device and in the dtype of the
    first unit's weight, holding the dense bias; the coefficients are fitted later (_decompose)."""
    reference = units[0].weight
    # a model moved to channels_last has NHWC conv weights; 1x1 and one-input-channel kernels are both layouts at
    # once, so any conv whose weight is NHWC-only tells the layout of the model
    source_channels_last = any(unit.kind == "conv" and not unit.weight.is_contiguous() for unit in units)
    for unit in units:
        for member in [unit, *unit.tied]:
            member.layer = _new_layer(member, settings).to(device=reference.device, dtype=reference.dtype)
            if member.kind == "conv" and source_channels_last:
                member.layer.to(memory_format=torch.channels_last)  # keep the source model's NHWC layout
            if member.bias is not None:
                member.layer.bias.data.copy_(member.bias.detach())


def _install_layers(model: nn.Module, plan: _Plan, bank: BasisBank) -> None:
    """Tie the shared coefficients, swap the new layers in (plain layers first: an attention module is rebuilt
    around its converted out_proj), register the bank once and install the one-matmul rebuild."""
    for unit in plan.units:
        for member in unit.tied:
            _share_coefficients(unit, member)
    for unit in plan.units:
        for member in [unit, *unit.tied]:
            for name in member.places:
                _install(model, name, member.layer)
    for names, _, projections in plan.attention:
        current = model.get_submodule(names[0]) if names[0] else model
        mapped = BasisMultiheadAttention.from_dense(current, {k: u.layer for k, u in projections.items()})
        for name in names:
            _install(model, name, mapped)
    attach_bank(model, bank)


def _install(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _refit_scales(layers: list[BasisLayer], rows: list[Tensor]) -> list[Tensor]:
    """Least-squares per-row scale of the quantized reconstruction, scale = <w, w_hat> / ||w_hat||^2.

    Returns the reconstructed (quantized) weights with those scales, as rows.
    """
    with torch.no_grad():
        for layer in layers:
            layer.scale.fill_(1.0)
        rebuilt_rows = []
        for layer, target, unit in zip(layers, rows, rebuild_layer_weights(layers)):
            unit = weight_rows(unit)
            energy = unit.square().sum(1)
            fitted = torch.where(energy > 0, (unit * target).sum(1) / energy.clamp_min(1e-30), torch.zeros_like(energy))
            layer.scale.copy_(fitted)
            rebuilt_rows.append(unit * fitted[:, None])
        return rebuilt_rows


def _errors(layers, rows, norms, quantized, residual) -> list[tuple[float, float]]:
    """(relative error with quantization, without it) per layer; the latter from the projection residual."""
    errors, start = [], 0
    for layer, target, norm, rebuilt in zip(layers, rows, norms, quantized):
        count = layer.out_rows * layer.segments
        lost = (residual[start : start + count].reshape(layer.out_rows, -1).sum(1) * norm.square()).sum()
        total = norm.square().sum().clamp_min(1e-30)
        errors.append((float((rebuilt - target).norm() / total.sqrt()), float((lost / total).sqrt())))
        start += count
    return errors


def _active_coefficients(layer: BasisLayer) -> int:
    """Coefficients the layer's segments may use: n/G each, n for a segment not assigned to a group yet (-1)."""
    bank = layer.bank
    if layer.segment_group is None:
        return layer.out_rows * layer.segments * bank.n_basis
    unassigned = int((layer.segment_group < 0).sum())
    return unassigned * bank.n_basis + (layer.segment_group.numel() - unassigned) * bank.group_size


def _report(units: list[_Unit], errors: list[tuple[float, float]] | None) -> list[dict]:
    report = []
    for index, unit in enumerate(units):
        layer = unit.layer
        report.append(
            dict(
                name=unit.name,
                kind=unit.kind,
                weight_shape=list(unit.weight.shape),
                segments=layer.out_rows * layer.segments,
                coefficients=_active_coefficients(layer),
                weights=unit.weight.numel(),
                rel_error=errors[index][0] if errors else None,
                rel_error_unquantized=errors[index][1] if errors else None,
            )
        )
    return report


def to_dense(model: nn.Module) -> nn.Module:
    """A copy of a basis-mapped model with ordinary nn.Conv2d / nn.Linear / nn.MultiheadAttention holding the
    rebuilt (quantized) weights.

    Same outputs, none of the rebuild cost: for deployment-speed inference and for comparison. Ties are kept (a
    layer whose coefficients are shared gives one weight Parameter). The input model is left untouched.
    """
    if not hasattr(model, "basisn_bank"):
        raise ValueError("model is not basis-mapped (no basisn_bank); to_dense takes the output of to_basisn")
    sync_bank(model)
    dense = copy.deepcopy(model)
    places: dict[int, list[str]] = {}
    modules: dict[int, nn.Module] = {}
    for name, module in dense.named_modules(remove_duplicate=False):
        if isinstance(module, BasisLayer | BasisMultiheadAttention):
            places.setdefault(id(module), []).append(name)
            modules[id(module)] = module
    layers = [m for m in modules.values() if isinstance(m, BasisLayer)]
    with torch.no_grad():
        weights = dict(zip(map(id, layers), rebuild_layer_weights(layers)))
    shared: dict[int, nn.Parameter] = {}  # id of a coef Parameter -> its dense weight (tied weights stay tied)
    plain_of: dict[int, nn.Module] = {}
    for layer in layers:
        if isinstance(layer, BasisConv2d):
            plain = nn.Conv2d(
                layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode, device="meta",
            )  # fmt: skip
        else:
            dense_type = getattr(layer, "dense_type", nn.Linear)
            plain = dense_type.__new__(dense_type)  # e.g. MultiheadAttention's Linear subclass, same forward
            nn.Linear.__init__(plain, layer.in_features, layer.out_features, layer.bias is not None, device="meta")
        memory_format = torch.channels_last if getattr(layer, "channels_last", False) else torch.contiguous_format
        if id(layer.coef) not in shared:
            shared[id(layer.coef)] = nn.Parameter(weights[id(layer)].detach().clone(memory_format=memory_format))
        plain.weight = shared[id(layer.coef)]
        if layer.bias is not None:
            plain.bias = shared.setdefault(id(layer.bias), nn.Parameter(layer.bias.detach().clone()))
        plain.train(layer.training)
        plain_of[id(layer)] = plain
    projection_ids = {
        id(child)
        for module in modules.values()
        if isinstance(module, BasisMultiheadAttention)
        for key, child in module._modules.items()
        if key in MHA_PROJECTIONS
    }
    for key in reversed(list(modules)):  # children before parents: an attention module gets its dense out_proj
        module = modules[key]
        if key in projection_ids:
            continue  # the attention module's own Parameters, below
        if isinstance(module, BasisMultiheadAttention):
            plain = module.to_dense(
                {k: shared[id(v.coef)].data for k, v in module._modules.items() if k in MHA_PROJECTIONS}
            )
        else:
            plain = plain_of[key]
        for name in places[key]:
            parent_name, _, child = name.rpartition(".")
            setattr(dense.get_submodule(parent_name) if parent_name else dense, child, plain)
    detach_bank(dense)
    return dense


# --------------------------------------------------------------------------------------------------------------
# Saving and loading.
# --------------------------------------------------------------------------------------------------------------
def save_basisn(model: nn.Module, path: str | os.PathLike, extra: dict | None = None, *, pack: bool = True) -> None:
    """Write state_dict + the to_basisn config (+ `extra`, plain data only), atomically (temp file, rename).

    `pack` (default): the quantized coefficients at coef_bits and the basis at basis_bits, bit-packed
    (basisn.packing; a 4-bit ResNet-18 is about 3 MB instead of 22 MB of float coefficients); load_basisn restores
    the same quantized weights bit for bit. The float latent values that training continues from are not kept:
    save with pack=False to resume training (the pipeline's stages hand models to each other that way).
    """
    if not hasattr(model, "basisn_bank"):
        raise ValueError("model is not basis-mapped (no basisn_bank); use torch.save(model.state_dict()) instead")
    if not isinstance(pack, bool):
        raise ValueError(f"pack={pack!r} is not allowed; use True (quantized, bit-packed) or False (float latents)")
    state = model.state_dict()
    payload = {"format": CHECKPOINT_FORMAT, "config": dict(sync_bank(model).config), "state_dict": state}
    if pack:
        from basisn.packing import PACKED_FORMAT, pack_state

        rest, packed = pack_state(model, state)
        payload = payload | {"format": PACKED_FORMAT, "state_dict": rest, "packed": packed}
    atomic_torch_save(payload | {"extra": extra or {}}, path)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """A save_basisn file as {"format", "config", "state_dict" (full: packed tensors decoded), "extra"}, or one
    ValueError line naming the file (garbage, truncated, not a basisn checkpoint, malformed packing)."""
    from basisn.packing import PACKED_FORMAT, unpack_checkpoint

    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except Exception as error:  # noqa: BLE001 - garbage, truncated or tampered files fail in many ways
        # torch's own message may suggest weights_only=False, which would let the file run code: not repeated
        raise ValueError(
            f"{path} is not a basisn model checkpoint (unreadable as a weights-only torch file: "
            f"{type(error).__name__}); expected a file written by basisn.save_basisn"
        ) from None
    formats = (CHECKPOINT_FORMAT, PACKED_FORMAT)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") not in formats:
        raise ValueError(f"{path} is not a basisn model checkpoint (expected format {' or '.join(map(repr, formats))})")
    if checkpoint["format"] == PACKED_FORMAT:
        try:
            checkpoint = unpack_checkpoint(checkpoint)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
    return checkpoint


CONFIG_KEYS = (
    "n_basis",
    "segment_len",
    "coef_bits",
    "coef_quant",
    "basis_bits",
    "groups",
    "exclude",
    "coef_scale",
    "assignment",  # absent in files written before it existed: "fixed"
)


def load_basisn(model: nn.Module, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Convert a freshly built (dense) `model` with the saved config and load the saved weights into it.

    All or nothing: the conversion and the load are first tried on a copy, so a checkpoint that does not fit
    (another architecture, missing or resized tensors, a bad config) raises one line naming the file and leaves
    `model` exactly as it was; so does a file that is not a basisn checkpoint. Reads packed (save_basisn's default)
    and float files. Returns the checkpoint's `extra` dict. Loads with weights_only=True: a checkpoint cannot run
    code.
    """
    checkpoint = read_checkpoint(path, map_location)
    config, state = checkpoint.get("config"), checkpoint.get("state_dict")
    if not isinstance(config, dict) or set(config) - set(CONFIG_KEYS) or not isinstance(state, dict):
        raise ValueError(
            f"{path}: the checkpoint's config/state_dict are not a basisn model's (config keys allowed: "
            f"{', '.join(CONFIG_KEYS)})"
        )
    if hasattr(model, "basisn_bank"):
        raise ValueError("model is already basis-mapped (it has a basisn_bank); load into a freshly built model")
    trial = copy.deepcopy(model)
    try:
        to_basisn(trial, **config, init="none")
        trial.load_state_dict(state)
    except (ValueError, RuntimeError, TypeError, KeyError) as error:
        reason = " ".join(str(error).split())
        raise ValueError(
            f"{path} does not fit this model ({type(model).__name__}), which is unchanged: {reason[:500]}"
        ) from error
    del trial
    to_basisn(model, **config, init="none")
    model.load_state_dict(state)
    return checkpoint.get("extra", {})
