"""Checkpoints at the bit widths the method stores: quantized coefficients at coef_bits, the basis at basis_bits.

A BasisN model is trained with float latent coefficients (the straight-through estimator needs them), but what it
computes with are their quantized values: integer codes times one step per output row (or per layer). A
deployment checkpoint needs only those, so `save_basisn(..., pack=True)` writes

    codes  (each in [0, 2^bits), bit-packed into bytes, little-endian)  +  one float step per range,

and, for a hardened group-sparse model (G > 1), only each segment's n/G active codes (the others are zero by the
group mask). `unpack_state` turns them back into the exact quantized tensors, bit for bit: packing checks the
round trip of every tensor and stores it as float if it does not hold (so a file never silently changes a
weight). The latent values are not kept: to continue training, save with pack=False.

Uniform codes: k + top for k in [-top, top], top = 2^(bits-1) - 1, value k * step (as basisn.layers.quantize_uniform
computes it). Pow2 codes (basisn.layers.quantize_pow2): 0 for zero, 1 + j for +2^(base + j), 1 + E + j for
-2^(base + j), E = 2^(bits-1) - 1 exponents, one integer `base` per range.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from basisn.layers import BANK_KEY, BasisLayer

PACKED_FORMAT = "basisn-model/2"


def pack_bits(codes: Tensor, bits: int) -> Tensor:
    """Non-negative integer codes (< 2^bits) -> uint8 bytes holding `bits` bits each, little-endian."""
    shifts = torch.arange(bits, dtype=torch.int32)
    flat = ((codes.reshape(-1, 1).to(torch.int32) >> shifts) & 1).to(torch.uint8).reshape(-1)
    flat = torch.cat([flat, flat.new_zeros(-flat.numel() % 8)])
    return (flat.reshape(-1, 8).to(torch.int32) << torch.arange(8, dtype=torch.int32)).sum(1).to(torch.uint8)


def unpack_bits(packed: Tensor, bits: int, count: int) -> Tensor:
    """The inverse of pack_bits: `count` codes as int64."""
    flat = ((packed.to(torch.int32).reshape(-1, 1) >> torch.arange(8, dtype=torch.int32)) & 1).reshape(-1)
    if flat.numel() < count * bits:
        raise ValueError(f"packed codes hold {flat.numel()} bits, fewer than {count} codes x {bits} bits")
    per_code = flat[: count * bits].reshape(count, bits).to(torch.int64)
    return (per_code << torch.arange(bits, dtype=torch.int64)).sum(1)


def _ranges(values: Tensor, per_row: bool) -> Tensor:
    """max |value| of every range: per output row (dim 0) or of the whole tensor, shaped to broadcast."""
    if per_row:
        return values.abs().reshape(values.shape[0], -1).amax(1).reshape(-1, *[1] * (values.dim() - 1))
    return values.abs().amax().reshape([1] * values.dim())


def _encode(values: Tensor, bits: int, quant: str, per_row: bool) -> tuple[Tensor, Tensor]:
    """(codes, per-range parameter) of quantized values: the uniform step, or the pow2 base exponent."""
    if quant == "uniform":
        top = 2 ** (bits - 1) - 1
        largest = _ranges(values, per_row)
        step = torch.where(largest > 0, largest / top, torch.ones_like(largest))
        return torch.round(values / step).to(torch.int64) + top, step
    n_exponents = 2 ** (bits - 1) - 1
    largest = _ranges(values, per_row)
    base = torch.where(largest > 0, torch.log2(largest.clamp_min(torch.finfo(values.dtype).tiny)), 0).round()
    base = base - (n_exponents - 1)
    exponent = torch.log2(values.abs().clamp_min(torch.finfo(values.dtype).tiny)).round() - base
    codes = 1 + exponent.clamp(0, n_exponents - 1).to(torch.int64) + n_exponents * (values < 0).to(torch.int64)
    return torch.where(values == 0, torch.zeros_like(codes), codes), base


def _decode(codes: Tensor, parameter: Tensor, bits: int, quant: str, dtype: torch.dtype) -> Tensor:
    if quant == "uniform":
        top = 2 ** (bits - 1) - 1
        return (codes - top).to(dtype) * parameter.to(dtype)
    n_exponents = 2 ** (bits - 1) - 1
    negative = codes > n_exponents
    j = torch.where(negative, codes - 1 - n_exponents, codes - 1)
    magnitude = torch.exp2((parameter + j).to(dtype))
    value = torch.where(negative, -magnitude, magnitude)
    return torch.where(codes == 0, torch.zeros_like(value), value)


def _active_columns(segment_group: Tensor | None, group_size: int, n_basis: int) -> Tensor | None:
    """The n/G active coefficient columns of every segment of a hardened group-sparse layer, else None."""
    if segment_group is None or group_size == n_basis or bool((segment_group < 0).any()):
        return None
    return segment_group.reshape(-1, 1).to(torch.int64) * group_size + torch.arange(group_size)


def _pack_tensor(
    values: Tensor, bits: int, quant: str, per_row: bool, columns: Tensor | None, n_basis: int
) -> dict | None:
    """One quantized tensor as a packed entry, or None when its round trip would not be exact."""
    values = values.detach().cpu()
    codes, parameter = _encode(values, bits, quant, per_row)
    entry = {"bits": bits, "quant": quant, "shape": list(values.shape), "dtype": str(values.dtype).split(".")[-1],
             "parameter": parameter, "columns": columns is not None}  # fmt: skip
    if not torch.equal(_decode(codes, parameter, bits, quant, values.dtype), values) or int(codes.max()) >= 2**bits:
        return None
    if columns is not None:  # only the active codes of every segment: the rest are zero by the group mask
        codes = codes.reshape(-1, n_basis).gather(1, columns)
    entry |= {"codes": pack_bits(codes, bits), "count": codes.numel()}
    return entry


def pack_state(model: nn.Module, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, dict]]:
    """(the state_dict without the tensors packed, the packed entries by key).

    Packs every basis-mapped layer's coefficients (their quantized values, at coef_bits) and the basis (at
    basis_bits); a group index is stored as int8. Unquantized tensors (bits None) stay float.
    """
    bank = model.basisn_bank
    rest, packed = dict(state), {}
    for prefix, layer in model.named_modules(remove_duplicate=False):
        if not isinstance(layer, BasisLayer):
            continue
        key = f"{prefix}.coef" if prefix else "coef"
        group_key = f"{prefix}.segment_group" if prefix else "segment_group"
        if group_key in rest and bank.groups <= 127:
            rest[group_key] = rest[group_key].to(torch.int8)  # -2..G-1: a byte, not eight
        if key not in rest or layer.coef_bits is None or key in packed:
            continue  # pruned (coef_orig), unquantized or already packed under this name
        with torch.no_grad():
            quantized = layer.quantized_coefficients()
        columns = _active_columns(layer.segment_group, bank.group_size, bank.n_basis)
        entry = _pack_tensor(quantized, layer.coef_bits, layer.coef_quant, layer.coef_scale == "channel", columns,
                             bank.n_basis)  # fmt: skip
        if entry is not None:
            packed[key] = entry
            del rest[key]
    if bank.basis_bits is not None and BANK_KEY in rest:
        with torch.no_grad():
            entry = _pack_tensor(bank.quantized(), bank.basis_bits, "uniform", False, None, bank.n_basis)
        if entry is not None:
            packed[BANK_KEY] = entry
            del rest[BANK_KEY]
    return rest, packed


def unpack_state(state: dict[str, Tensor], packed: dict[str, dict]) -> dict[str, Tensor]:
    """The full state_dict: every packed entry decoded to its exact quantized tensor (ValueError if malformed)."""
    full = dict(state)
    for key, entry in packed.items():
        try:
            bits, quant, shape = int(entry["bits"]), entry["quant"], [int(v) for v in entry["shape"]]
            dtype = getattr(torch, entry["dtype"])
            count = int(entry["count"])
            codes = unpack_bits(entry["codes"], bits, count)
            if entry["columns"]:
                group_key = key[: -len("coef")] + "segment_group"
                n_basis = shape[-1]
                group_size = count // full[group_key].numel()  # codes kept per segment: n/G
                columns = _active_columns(full[group_key], group_size, n_basis)
                # the inactive columns hold the code for zero: `top` for uniform, 0 for pow2
                zero_code = 2 ** (bits - 1) - 1 if quant == "uniform" else 0
                everything = torch.full((columns.shape[0], n_basis), zero_code, dtype=torch.int64)
                codes = everything.scatter(1, columns, codes.reshape(columns.shape[0], -1))
            values = _decode(codes.reshape(shape), entry["parameter"], bits, quant, dtype)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, ZeroDivisionError) as error:
            raise ValueError(f"packed entry {key!r} is malformed ({type(error).__name__}: {error})") from None
        full[key] = values
    return full


def unpack_checkpoint(checkpoint: dict) -> dict:
    """A loaded PACKED_FORMAT checkpoint with its state_dict decoded in full (ValueError, no path, if malformed);
    save_basisn's reader and the pipeline's model-file reader both name the file around it."""
    packed, state = checkpoint.get("packed"), checkpoint.get("state_dict")
    if not isinstance(packed, dict) or not isinstance(state, dict):
        raise ValueError("a packed basisn checkpoint without its packed tensors or state_dict")
    return checkpoint | {"state_dict": unpack_state(state, packed)}
