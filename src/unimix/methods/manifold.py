"""Manifold Mixup: mixing hidden representations at a random layer.

Verma, Lamb, Beckham, Najafi, Mitliagkas, Lopez-Paz & Bengio, "Manifold Mixup: Better
Representations by Interpolating Hidden States" (ICML 2019).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from unimix.checks import check_instance
from unimix.methods._common import random_device, require_model, resolve_rows, unwrap_model
from unimix.mix import Mixer, MixInfo
from unimix.mixmethod import MixMethod
from unimix.registry import register

__all__ = ["ManifoldMixup", "ManifoldMix", "eligible_layers", "INPUT"]

INPUT = "input"
"""Name of layer 0, the input itself (mixing there is input Mixup)."""


def eligible_layers(model: nn.Module, layers: Sequence[str] | None = None) -> list[str]:
    """Names of the modules whose outputs Manifold Mixup may mix (the input, layer 0, not included).

    ``layers`` names them explicitly (``model.named_modules()`` names, e.g. ``"layer1"``,
    ``"features.2"``). Otherwise: the model's ``manifold_layers`` attribute if it has one; else
    ``layer1`` and ``layer2`` when the model has them (the paper's choice for (PreAct)ResNets:
    ``S = {0, 1, 2}``); else every top-level child with parameters except the last (the
    classifier).
    """
    model = unwrap_model(model)
    names = dict(model.named_modules())
    if layers is None:
        layers = getattr(model, "manifold_layers", None)
    if layers is None:
        if "layer1" in names and "layer2" in names:
            layers = ["layer1", "layer2"]
        else:
            with_params = [
                n for n, m in model.named_children() if any(True for _ in m.parameters())
            ]
            layers = with_params[:-1]
    layers = list(layers)
    unknown = [n for n in layers if n not in names or n == ""]
    if unknown:
        raise ValueError(
            f"layers {unknown} are not modules of the model; choose among "
            f"{[n for n in names if n][:20]}{' …' if len(names) > 21 else ''}"
        )
    return layers


def _mix_rows(h: Tensor, rows: Tensor, partner_rows: Tensor, lam: Tensor) -> Tensor:
    """``h`` with ``h[rows] ← λ h[rows] + (1 − λ) h[partner_rows]`` (from the unmixed values)."""
    w = lam.to(h.device, h.dtype).view(-1, *([1] * (h.dim() - 1)))
    mixed = h.index_select(0, partner_rows).lerp(h.index_select(0, rows), w)
    return h.index_copy(0, rows, mixed)


class ManifoldMixup:
    """Manifold Mixup (Verma et al., ICML 2019) around any ``nn.Module``.

    ``logits, targets = manifold(images, labels)`` picks a layer ``k`` uniformly among the
    eligible ones (the input counts as layer 0, as in the paper), runs the model with a forward
    hook on layer ``k`` that mixes its output ``h`` as ``λ h_i + (1 − λ) h_{partner(i)}`` with
    the partner, λ, mode and generator machinery of a ``Mixer("mixup", ...)``, and removes the
    hook (also on error). The targets are the Mixer's: ``λ y_i + (1 − λ) y_{partner(i)}``.
    Paper defaults: ``α = 2`` and, for ResNets, ``S = {input, layer1, layer2}`` (see
    :func:`eligible_layers`). The model's parameters, buffers (beyond what its own forward does)
    and hooks are left as they were.

    Args:
        model: the network; its forward must call the chosen layers once.
        layers: eligible module names (see :func:`eligible_layers`).
        include_input: whether the input (layer 0) is eligible.
        alpha, mode, prob, partner, num_classes, label_smoothing, generator: as for
            :class:`~unimix.Mixer`.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | None = None,
        *,
        alpha: float = 2.0,
        mode: str = "batch",
        prob: float = 1.0,
        partner: str = "flip",
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        include_input: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        check_instance("model", model, nn.Module, "a torch.nn.Module")
        self.model = model
        self.layers = eligible_layers(model, layers)
        self.choices = ([INPUT] if include_input else []) + self.layers
        if not self.choices:
            raise ValueError("no eligible layer: pass layers=[...] or include_input=True")
        self.mixer = Mixer(
            "mixup",
            alpha=alpha,
            mode=mode,
            prob=prob,
            partner=partner,
            num_classes=num_classes,  # type: ignore[arg-type]
            label_smoothing=label_smoothing,
            generator=generator,
        )
        self.last_layer: str | None = None
        self.last_info: MixInfo | None = None

    def __call__(
        self, images: Tensor, labels: Tensor, *, layer: str | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mixed forward pass: ``(logits, soft targets [B, K])``. ``layer`` forces the layer."""
        if layer is None:
            g = self.mixer.generator
            k = int(torch.randint(0, len(self.choices), (1,), generator=g, device=random_device(g)))
            layer = self.choices[k]
        elif layer not in self.choices:
            raise ValueError(f"layer must be one of {self.choices}, got {layer!r}")
        self.last_layer = layer
        if layer == INPUT:
            mixed, targets, info = self.mixer(images, labels, return_info=True)
            self.last_info = info
            return self.model(mixed), targets

        module = dict(unwrap_model(self.model).named_modules())[layer]
        state: dict[str, Any] = {}

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Tensor:
            if "targets" in state:
                raise RuntimeError(
                    f"layer {layer!r} ran twice in one forward pass; Manifold Mixup mixes once"
                )
            if (
                not isinstance(output, Tensor)
                or output.dim() < 1
                or output.shape[0] != images.shape[0]
            ):
                raise TypeError(f"layer {layer!r} must return a [B, ...] tensor to be mixed")
            flat = output.reshape(output.shape[0], 1, 1, -1)
            mixed, state["targets"], state["info"] = self.mixer(flat, labels, return_info=True)
            return mixed.view_as(output)

        handle = module.register_forward_hook(hook)
        try:
            logits = self.model(images)
        finally:
            handle.remove()
        if "targets" not in state:
            raise RuntimeError(f"layer {layer!r} was not called by the model's forward pass")
        self.last_info = state["info"]
        return logits, state["targets"]

    def state_dict(self) -> dict[str, Any]:
        return self.mixer.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.mixer.load_state_dict(state)


@register("manifold")
class ManifoldMix(MixMethod):
    """Manifold Mixup by name in :class:`~unimix.Mixer`: ``mixer(images, labels, model=model)``.

    Chooses a layer uniformly among the input and :func:`eligible_layers` ``(model, layers)``.
    At the input it returns the Mixup of the rows. At a hidden layer it returns the rows
    unmixed and arms a one-shot forward hook on that layer: the model's *next* forward pass
    (which must be on the mixed batch, right after the Mixer call) mixes the layer's output
    rows with their partners' with the Mixer's λ, then removes the hook. The label weight is λ.
    Paper default ``α = 2`` (``Mixer(alpha=2.0)``). :class:`ManifoldMixup` does the same in one
    call and is the safer interface; this one lets the study treat Manifold Mixup like any
    other method.
    """

    requires_model = True

    def __init__(self, layers: Sequence[str] | None = None, include_input: bool = True) -> None:
        self.layers = None if layers is None else list(layers)
        self.include_input = bool(include_input)
        self._armed: Any = None
        self.last_layer: str | None = None

    def mix(
        self,
        images: Tensor,
        partners: Tensor,
        lam: Tensor,
        *,
        generator: torch.Generator | None,
        context: Mapping[str, Any],
    ) -> tuple[Tensor, Tensor]:
        model = unwrap_model(require_model(context, "manifold"))
        choices = ([INPUT] if self.include_input else []) + eligible_layers(model, self.layers)
        k = int(
            torch.randint(
                0, len(choices), (1,), generator=generator, device=random_device(generator)
            )
        )
        self.last_layer = choices[k]
        self.disarm()
        x = images if images.is_floating_point() else images.float()
        lam_rows = lam.to(x.device)
        if choices[k] == INPUT:
            w = lam_rows.to(x.dtype).view(-1, 1, 1, 1)
            return partners.to(x.dtype).lerp(x, w), lam_rows
        rows, partner_rows = resolve_rows(images, partners, context, "manifold")
        expected = None if "rows" in context else images.shape[0]
        module = dict(model.named_modules())[choices[k]]

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Tensor:
            self.disarm()
            if not isinstance(output, Tensor) or (
                expected is not None and output.shape[0] != expected
            ):
                raise RuntimeError(
                    f"manifold: the forward pass after the Mixer call must be on the mixed batch "
                    f"({expected} rows); layer {choices[k]!r} returned "
                    f"{tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__}"
                )
            return _mix_rows(output, rows, partner_rows, lam_rows)

        self._armed = module.register_forward_hook(hook)
        return x.clone(), lam_rows

    def disarm(self) -> None:
        """Remove a hook armed by :meth:`mix` that has not fired yet."""
        if self._armed is not None:
            self._armed.remove()
            self._armed = None
