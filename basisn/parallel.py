"""Parallelization-aware fine-tuning options (our interpretation of the paper's training approach, docs/method.md §1.3).

Two options of `basisn.train.fit`, both no-ops for a dense model and for the default dense-coefficient BasisN model:

- Learned group assignment. A model decomposed with `to_basisn(..., groups=G, assignment="learned")` starts with
  dense coefficients and every segment unassigned (segment_group -1). While any segment is unassigned, each
  optimizer step is followed by the proximal step of a group lasso over the G coefficient groups of every
  unassigned segment, whose weight ramps up linearly until the hardening step round(harden_at * total steps)
  (normalised: `group_lasso` is the total relative shrinkage over the ramp, see group_lasso_threshold). There
  the assignment HARDENS: each segment keeps the group with the largest coefficient norm, the other groups'
  coefficients (and their momentum) are zeroed, and training continues with that mask. The state is the
  segment_group buffer (in state_dict), so a resumed run hardens at the same step.
- Alternating optimisation: phases of `coef_steps` optimizer steps that update everything but the basis, then
  `basis_steps` that update only the basis. A frozen parameter's gradient is dropped before the step, so SGD skips
  it entirely (no momentum, no weight decay): one optimizer, the phase a closed form of the step count.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

ALTERNATE_KEYS = ("coef_steps", "basis_steps")


def _unique_grouped_layers(model: nn.Module) -> list[nn.Module]:
    """Basis layers with a group mask, one per coefficient tensor (tied layers share coef and segment_group)."""
    layers: dict[int, nn.Module] = {}
    for module in model.modules():
        if getattr(module, "basis_mapped", False) and getattr(module, "segment_group", None) is not None:
            layers.setdefault(id(module.coef), module)
    return list(layers.values())


def assignment_pending(model: nn.Module) -> bool:
    """True while some segment of a basis-mapped model is not assigned to a group yet (segment_group -1)."""
    return any(bool((layer.segment_group < 0).any()) for layer in _unique_grouped_layers(model))


def harden_step(harden_at: float, total_steps: int) -> int:
    """The optimizer step (1-based count) after which a learned assignment hardens: round(harden_at · total)."""
    return min(max(1, round(harden_at * total_steps)), total_steps)


def group_lasso_threshold(group_lasso: float, step: int, hardening_step: int, lr_factor: float) -> float:
    """The proximal step's relative shrinkage after optimizer step `step` (1-based) of the ramp.

    lambda(t) ramps linearly from 0 to its top at the hardening step T_h, and is normalised so that the shrinkage
    the penalty alone applies over the whole ramp adds up to `group_lasso` (at a constant learning rate):
    threshold_t = group_lasso · (2 / T_h) · (t / T_h) · lr_t / lr. So group_lasso = 1 means "by the hardening step,
    the penalty has pulled every group by once its segment's norm", whatever the model, the data or the number of
    steps (a plain penalty weight would act 40 times as hard on a run 40 times as long).
    """
    return group_lasso * (2 / hardening_step) * min(1.0, step / hardening_step) * lr_factor


def _grouped(layer: nn.Module, tensor: Tensor) -> Tensor:
    """(O, S, n) -> (O, S, G, n/G): the coefficient groups of every segment."""
    bank = layer.bank
    return tensor.view(*tensor.shape[:-1], bank.groups, bank.group_size)


@torch.no_grad()
def group_lasso_prox(model: nn.Module, threshold: float) -> None:
    """Proximal step of the group lasso  sum_s ||c_s|| · sum_g ||c_s,g||  on the unassigned segments.

    Group soft-thresholding: every group of a segment shrinks by `threshold` · ||c_s|| (the segment's own
    coefficient norm before the step, held constant: the penalty is relative, so segments of every size and every
    layer are pulled alike and the weight means the same for any model); a group whose norm falls below that
    becomes exactly zero. `threshold` is lr · lambda(t), as in a gradient step of the penalty.
    """
    if threshold <= 0:
        return
    for layer in _unique_grouped_layers(model):
        unassigned = layer.segment_group < 0
        if not bool(unassigned.any()):
            continue
        groups = _grouped(layer, layer.coef.data)
        group_norms = groups.norm(dim=-1)  # (O, S, G)
        segment_norms = group_norms.square().sum(-1, keepdim=True).sqrt()
        factor = (1 - threshold * segment_norms / group_norms.clamp_min(1e-30)).clamp_min(0)
        factor = torch.where(unassigned[..., None], factor, torch.ones_like(factor))
        groups.mul_(factor[..., None].to(groups.dtype))


@torch.no_grad()
def harden(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Assign every unassigned segment to its group of largest coefficient norm; zero the other groups.

    The zeroed coefficients' SGD momentum is zeroed too, so the masked (gradient-free) entries stay exactly zero.
    Deterministic (argmax takes the first of equal norms). Returns the number of segments assigned.
    """
    assigned = 0
    for layer in _unique_grouped_layers(model):
        unassigned = layer.segment_group < 0
        if not bool(unassigned.any()):
            continue
        choice = _grouped(layer, layer.coef.data).norm(dim=-1).argmax(-1)
        layer.segment_group.copy_(torch.where(unassigned, choice, layer.segment_group))
        keep = torch.arange(layer.bank.groups, device=choice.device) == layer.segment_group[..., None]  # (O, S, G)
        keep = keep[..., None].to(layer.coef.dtype)
        targets = [layer.coef.data]
        if optimizer is not None:
            buffer = optimizer.state.get(layer.coef, {}).get("momentum_buffer")
            if buffer is not None:
                targets.append(buffer)
        for target in targets:
            _grouped(layer, target).mul_(keep)
        assigned += int(unassigned.sum())
    return assigned


def check_alternate(value: object) -> str | None:
    """None if `value` is a valid alternate schedule (null or {coef_steps: k1, basis_steps: k2}), else why not."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != set(ALTERNATE_KEYS):
        return "null or a mapping {coef_steps: k1, basis_steps: k2} (integers >= 1)"
    for key in ALTERNATE_KEYS:
        steps = value[key]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            return f"{key} must be an integer >= 1 (null: the joint update)"
    return None


def basis_parameter(model: nn.Module) -> nn.Parameter:
    """The shared basis Parameter of a basis-mapped model (the one the root holds)."""
    bank = getattr(model, "basisn_bank", None)
    if bank is None:
        raise ValueError(
            "TrainConfig.alternate needs a basis-mapped model (basisn.to_basisn); use alternate=None for this model"
        )
    bank.follow_root()
    return bank.weight


def frozen_this_step(model: nn.Module, alternate: Mapping[str, int], step: int) -> list[nn.Parameter]:
    """Parameters that optimizer step `step` (0-based) must not move: the basis in a coefficient phase, everything
    else in a basis phase. Phases repeat every coef_steps + basis_steps steps, coefficient phase first."""
    basis = basis_parameter(model)
    if in_coefficient_phase(alternate, step):
        return [basis]
    return [p for p in model.parameters() if p is not basis]


def in_coefficient_phase(alternate: Mapping[str, int] | None, step: int) -> bool:
    """Whether optimizer step `step` (0-based) updates the coefficients (always, under the joint update)."""
    if alternate is None:
        return True
    return step % (alternate["coef_steps"] + alternate["basis_steps"]) < alternate["coef_steps"]
