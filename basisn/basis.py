"""The global basis: segmenting weights, the SVD decomposition, and converting models to and from BasisN.

Decomposition (DESIGN.md 1.2): every output row of every basis-mapped layer is normalised (its norm kept as the
layer's per-output scale), cut into segments of length m, and all segments of all layers are stacked. The top-n
right singular vectors of that stack are the least-squares-optimal shared linear basis; coefficients follow by
least squares against the *quantized* basis, then are quantized, then each row's scale is refitted.
"""

from __future__ import annotations

import copy
import math
import os

import torch
from torch import Tensor, nn

from basisn.atomic import atomic_torch_save
from basisn.layers import (
    COEF_SCALES,
    QUANTIZERS,
    BasisBank,
    BasisConv2d,
    BasisLayer,
    BasisLinear,
    _rebuild,
    attach_bank,
    basis_layers,
    check_bits,
    check_positive_int,
    check_root,
    detach_bank_hooks,
    random_orthonormal,
)

INITS = ("svd", "random", "none")
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

    Our reading of the paper's "training to enhance computation parallelization" (DESIGN.md 1.1): start from the
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
def _validate(model, n_basis, segment_len, coef_bits, coef_quant, basis_bits, groups, exclude, coef_scale, init):
    if not isinstance(model, nn.Module):
        raise ValueError(f"model={type(model).__name__} is not allowed; pass a torch.nn.Module")
    check_positive_int("n_basis", n_basis)
    check_positive_int("segment_len", segment_len)
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
    if isinstance(exclude, str):
        raise ValueError(f"exclude={exclude!r} is a string; pass a list/tuple of module names, e.g. [{exclude!r}]")
    check_root(model)
    if hasattr(model, "basisn_bank"):
        raise ValueError("model is already basis-mapped (it has a basisn_bank); convert the original model")
    names = {name for name, _ in model.named_modules() if name}
    for name in exclude:
        if name not in names:
            close = sorted(n for n in names if "." not in n)[:12]
            raise ValueError(f"exclude name {name!r} matches no module; top-level modules are: {', '.join(close)}")


def _is_excluded(name: str, exclude: tuple[str, ...]) -> bool:
    return any(name == e or name.startswith(e + ".") for e in exclude)


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
    init: str = "svd",
    group_iterations: int = 10,
    seed: int = 0,
) -> tuple[nn.Module, list[dict]]:
    """Replace every nn.Conv2d / nn.Linear of `model` (in place) by its basis-mapped version, all sharing one bank.

    Args mirror DESIGN.md 1.1: `n_basis` n, `segment_len` m (= crossbar rows), `coef_bits`/`coef_quant` the
    coefficient quantizer (None: off), `basis_bits` the basis quantizer (None: off), `groups` G of the
    group-sparse option, `exclude` module names kept dense (a name also excludes everything under it),
    `coef_scale` "channel" or "layer" range of the coefficient quantizer, `init` "svd" (the decomposition),
    "random" (a random orthonormal basis, for comparison) or "none" (leave random values: loading a checkpoint).

    Returns the model and a report: one dict per converted layer (name, kind, weight shape, segments,
    coefficients (active), weights, relative reconstruction error with and without quantization).
    """
    exclude = exclude if isinstance(exclude, str) else tuple(exclude)  # a bare string is refused by _validate
    _validate(model, n_basis, segment_len, coef_bits, coef_quant, basis_bits, groups, exclude, coef_scale, init)
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear) and not _is_excluded(name, exclude)
    ]
    if not targets:
        raise ValueError("model has no nn.Conv2d / nn.Linear to convert (after exclude)")
    reference = next(iter(targets))[1].weight
    generator = torch.Generator().manual_seed(seed)

    # 1. Stack the normalised segments of all layers (float32; only the m x m and n x n systems need float64).
    rows = [weight_rows(module.weight.detach().float()) for _, module in targets]
    norms = [r.norm(dim=1) for r in rows]
    segments = [segment_rows(r / n.clamp_min(1e-30)[:, None], segment_len) for r, n in zip(rows, norms)]
    stacked = torch.cat([s.reshape(-1, segment_len) for s in segments])
    del segments

    # 2. The shared basis (and the group of each segment).
    if init == "svd":
        basis = top_singular_basis(stacked, n_basis)
    else:
        basis = random_orthonormal(n_basis, segment_len, generator).to(stacked)
    basis = basis.float()
    segment_group = None
    if groups > 1 and init != "none":
        basis, segment_group = assign_groups(stacked, basis, groups, group_iterations)
    bank = BasisBank(n_basis, segment_len, basis_bits, groups).to(device=reference.device, dtype=reference.dtype)

    # 3. The layers. Their coefficients are fitted after the bank holds its final (quantized) basis.
    new_layers: list[BasisLayer] = []
    # a model moved to channels_last has NHWC conv weights; 1x1 and one-input-channel kernels are both layouts at
    # once, so any conv whose weight is NHWC-only tells the layout of the model
    source_channels_last = any(
        isinstance(module, nn.Conv2d) and not module.weight.is_contiguous() for _, module in targets
    )
    for _, module in targets:
        settings = dict(bank=bank, coef_bits=coef_bits, coef_quant=coef_quant, coef_scale=coef_scale)
        if isinstance(module, nn.Conv2d):
            layer = BasisConv2d(
                module.in_channels,
                module.out_channels,
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                module.groups,
                module.bias is not None,
                module.padding_mode,
                **settings,
            )
        else:
            layer = BasisLinear(module.in_features, module.out_features, module.bias is not None, **settings)
        layer.to(device=reference.device, dtype=reference.dtype)
        if isinstance(module, nn.Conv2d) and source_channels_last:
            layer.to(memory_format=torch.channels_last)  # keep the source model's NHWC layout
        if module.bias is not None:
            layer.bias.data.copy_(module.bias.detach())
        new_layers.append(layer)

    errors = None
    if init != "none":
        with torch.no_grad():
            bank.weight.copy_(basis)
            quantized_basis = bank.quantized().float()
            group_size = n_basis // groups
            coefs = torch.zeros(stacked.shape[0], n_basis, device=stacked.device)
            residual = torch.zeros(stacked.shape[0], device=stacked.device)  # of the unquantized projection
            for g in range(groups):
                members = slice(None) if segment_group is None else segment_group == g
                block = slice(g * group_size, (g + 1) * group_size)
                coefs[members, block] = least_squares_coefficients(stacked[members], quantized_basis[block]).float()
                projected = (stacked[members] @ basis[block].T) @ basis[block]  # the basis rows are orthonormal
                residual[members] = (stacked[members] - projected).square().sum(1)
            start = 0
            for layer in new_layers:
                count = layer.out_rows * layer.segments
                layer.coef.copy_(coefs[start : start + count].reshape(layer.coef.shape))
                if segment_group is not None:
                    layer.segment_group.copy_(segment_group[start : start + count].reshape(layer.segment_group.shape))
                start += count
            del coefs
            quantized_weights = _refit_scales(new_layers, rows)
            errors = _errors(new_layers, rows, norms, quantized_weights, residual)

    # 4. Swap the modules in, register the bank once, install the one-matmul rebuild.
    for (name, _), layer in zip(targets, new_layers):
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)
    attach_bank(model, bank)
    bank.config = dict(
        n_basis=n_basis,
        segment_len=segment_len,
        coef_bits=coef_bits,
        coef_quant=coef_quant,
        basis_bits=basis_bits,
        groups=groups,
        exclude=list(exclude),
        coef_scale=coef_scale,
    )
    return model, _report(targets, new_layers, errors)


def _refit_scales(layers: list[BasisLayer], rows: list[Tensor]) -> list[Tensor]:
    """Least-squares per-row scale of the quantized reconstruction, scale = <w, w_hat> / ||w_hat||^2.

    Returns the reconstructed (quantized) weights with those scales, as rows.
    """
    with torch.no_grad():
        for layer in layers:
            layer.scale.fill_(1.0)
        rebuilt_rows = []
        for layer, target, unit in zip(layers, rows, _rebuild(layers)):
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


def _report(targets, layers, errors) -> list[dict]:
    group_size = layers[0].bank.group_size
    report = []
    for index, ((name, module), layer) in enumerate(zip(targets, layers)):
        report.append(
            dict(
                name=name,
                kind="conv" if isinstance(module, nn.Conv2d) else "linear",
                weight_shape=list(module.weight.shape),
                segments=layer.out_rows * layer.segments,
                coefficients=layer.out_rows * layer.segments * group_size,
                weights=module.weight.numel(),
                rel_error=errors[index][0] if errors else None,
                rel_error_unquantized=errors[index][1] if errors else None,
            )
        )
    return report


def to_dense(model: nn.Module) -> nn.Module:
    """A copy of a basis-mapped model with ordinary nn.Conv2d / nn.Linear holding the rebuilt (quantized) weights.

    Same outputs, none of the rebuild cost: for deployment-speed inference and for comparison. The input model is
    left untouched.
    """
    if not hasattr(model, "basisn_bank"):
        raise ValueError("model is not basis-mapped (no basisn_bank); to_dense takes the output of to_basisn")
    dense = copy.deepcopy(model)
    named = basis_layers(dense)
    with torch.no_grad():
        weights = _rebuild([layer for _, layer in named])
    for (name, layer), weight in zip(named, weights):
        if isinstance(layer, BasisConv2d):
            plain = nn.Conv2d(
                layer.in_channels,
                layer.out_channels,
                layer.kernel_size,
                layer.stride,
                layer.padding,
                layer.dilation,
                layer.groups,
                layer.bias is not None,
                layer.padding_mode,
                device="meta",
            )
        else:
            plain = nn.Linear(layer.in_features, layer.out_features, layer.bias is not None, device="meta")
        memory_format = torch.channels_last if getattr(layer, "channels_last", False) else torch.contiguous_format
        plain.weight = nn.Parameter(weight.detach().clone(memory_format=memory_format))
        if layer.bias is not None:
            plain.bias = nn.Parameter(layer.bias.detach().clone())
        plain.train(layer.training)
        parent_name, _, child = name.rpartition(".")
        setattr(dense.get_submodule(parent_name) if parent_name else dense, child, plain)
    detach_bank_hooks(dense)
    del dense.basisn_bank
    return dense


# --------------------------------------------------------------------------------------------------------------
# Saving and loading.
# --------------------------------------------------------------------------------------------------------------
def save_basisn(model: nn.Module, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write state_dict + the to_basisn config (+ `extra`, plain data only), atomically (temp file, rename)."""
    if not hasattr(model, "basisn_bank"):
        raise ValueError("model is not basis-mapped (no basisn_bank); use torch.save(model.state_dict()) instead")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": dict(model.basisn_bank.config),
        "state_dict": model.state_dict(),
        "extra": extra or {},
    }
    atomic_torch_save(payload, path)


def load_basisn(model: nn.Module, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Convert a freshly built (dense) `model` with the saved config and load the saved weights into it.

    Returns the checkpoint's `extra` dict. Loads with weights_only=True: a checkpoint cannot run code.
    """
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a basisn model checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    config = dict(checkpoint["config"])
    to_basisn(model, **config, init="none")
    model.load_state_dict(checkpoint["state_dict"])
    return checkpoint.get("extra", {})
