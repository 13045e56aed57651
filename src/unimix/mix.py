"""The mixing engine: one vectorised :class:`Mixer` for every MSDA method, mode and partner rule.

For a batch ``x`` with labels ``y``, each row ``k`` is mixed with a partner row ``j = partner[k]``:

    x̃_k = M_k ⊙ x_k + (1 − M_k) ⊙ x_j ,      ỹ_k = λ̄_k y_k + (1 − λ̄_k) y_j ,   λ̄_k = mean(M_k)

where ``M_k`` comes from a mask sampler of :mod:`unimix.masks` given ``λ ~ Beta(α, α)``
(Park, Yun & Chun, NeurIPS 2022, section 2). The label weight is the *effective* ratio: the mean
of the mask actually applied, after clipping and rounding, in the images' dtype
— what the paper's reference code does for GMix, whose label weight is the kernel's mean
(``label_weight="nominal"`` weights by the drawn λ instead, as timm's ``correct_lam=False``).

The flow is **sample → plan → apply**: :meth:`Mixer.sample` draws everything random into a frozen
:class:`~unimix.plan.MixPlan`; :meth:`Mixer.apply` and :meth:`Mixer.targets` are pure functions
of it; ``mixer(images, labels)`` is those three calls.

Modes follow timm's ``Mixup``: ``"batch"`` draws one λ and one mask for the whole batch,
``"pair"`` one per pair of rows (each row of a pair gets the same mask), ``"elem"`` one per row.
No mode loops over the batch in Python, and no mode needs an even batch except ``"pair"``.

    >>> mixer = Mixer(["mixup", "cutmix"], alpha=1.0, mode="elem", num_classes=10)
    >>> images, targets = mixer(images, labels)             # doctest: +SKIP
    >>> loss = soft_target_cross_entropy(model(images), targets)  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from unimix import masks as _masks
from unimix import registry
from unimix.checks import (
    check_alpha,
    check_alpha_names,
    check_batch_size,
    check_choice,
    check_generator,
    check_generator_state,
    check_image_size,
    check_images,
    check_inplace,
    check_label_maps,
    check_measured,
    check_method_list,
    check_method_params,
    check_plan_fits,
    check_positive_int,
    check_probability_weights,
    check_switch_prob,
    check_unit,
)
from unimix.draw import draw_for_graph, draw_plan, graph_tensors
from unimix.kernels import (
    apply_map,
    apply_masks,
    copied_rows,
    dense_targets,
    mask_kind,
    run_image_methods,
    traced_blend,
)
from unimix.mixmethod import MixMethod
from unimix.plan import Applied, Measured, MixInfo, MixPlan
from unimix.targets import (
    SoftTargetCrossEntropy,
    mix_targets,
    one_hot_targets,
    soft_target_cross_entropy,
)

__all__ = [
    "Mixer",
    "check_mixer",
    "MixPlan",
    "MixInfo",
    "Measured",
    "Applied",
    "MixMethod",
    "soft_target_cross_entropy",
    "SoftTargetCrossEntropy",
    "one_hot_targets",
]

Mode = Literal["batch", "pair", "elem"]
Partner = Literal["flip", "random"]
LabelWeight = Literal["effective", "nominal"]
Method = _masks.MaskSampler | MixMethod


def _build_method(name: str | Method, params: Mapping[str, Any]) -> Method:
    if isinstance(name, (_masks.MaskSampler, MixMethod)):
        return name
    if not isinstance(name, str) or name not in registry.available():
        raise ValueError(
            f"unknown mixing method {name!r} in methods; known methods: "
            f"{', '.join(registry.available())}"
        )
    return registry.get(name, **params)


def _parse_methods(methods: object, switch_prob: float | None) -> tuple[list[Any], list[float]]:
    """Method names (or instances) and their weights, from ``methods`` and ``switch_prob``."""
    if isinstance(methods, (str, _masks.MaskSampler, MixMethod)):
        names, weights = [methods], [1.0]
    elif isinstance(methods, Mapping):
        parsed = check_probability_weights("methods", methods)
        names, weights = list(parsed), list(parsed.values())
    else:
        names = check_method_list(methods, registry.available())
        weights = [1.0] * len(names)
    if switch_prob is not None:
        switch_prob = check_switch_prob(switch_prob, methods)
        weights = [1.0 - switch_prob, switch_prob]
    return names, weights


class Mixer:
    """Mix a batch of images and labels with one or several MSDA methods.

    Args:
        methods: a method name (``"mixup"``, ``"cutmix"``, ``"hmix"``, ``"gmix"``, ``"none"`` or any
            registered one), a list of names (drawn uniformly, or by ``switch_prob`` for two), or a
            mapping name → weight. Sampler instances are accepted too.
        alpha: ``α`` of ``λ ~ Beta(α, α)``; a number, or a mapping method name → α.
        mode: ``"batch"`` (one λ and mask per batch), ``"pair"`` (per pair of rows; even batch) or
            ``"elem"`` (per row).
        prob: probability of mixing at all, per batch / pair / row (drawn once, never twice).
        switch_prob: with two methods, the probability of the second (timm's Mixup→CutMix switch).
        label_smoothing: ``ε`` of label smoothing applied to the targets before mixing.
        num_classes: ``K``; required when labels are class indices.
        partner: ``"flip"`` pairs row ``k`` with row ``B−1−k`` (timm's rule); ``"random"`` draws a
            random permutation (a random pairing in ``"pair"`` mode).
        generator: a :class:`torch.Generator` for every random draw (``None``: PyTorch's global RNG).
        label_weight: ``"effective"`` (default) weights the own label by ``λ̄ = mean(M)``, the mask
            actually applied (as the paper's reference code labels GMix: by the kernel's mean);
            ``"nominal"`` by the drawn λ (timm's ``correct_lam=False`` for clipped boxes). The
            pixels are the same either way.
        **method_params: parameters routed to every method that takes them (e.g. ``r=0.5`` for
            HMix, ``boundary="wrap"``).

    ``mixer(images, labels)`` → ``(mixed images, soft targets [B, K])``; it is
    ``plan = mixer.sample(B, H, W)``, ``mixer.apply(images, plan)``, ``mixer.targets(labels, plan)``.

    Thread safety: one Mixer may be called from several threads, in place or not; each draw is
    atomic (a lock around :meth:`sample`) and each thread mixes in its own workspace.
    """

    def __init__(
        self,
        methods: str | Sequence[str] | Mapping[str, float] = "mixup",
        alpha: float | Mapping[str, float] = 1.0,
        mode: Mode = "batch",
        prob: float = 1.0,
        switch_prob: float | None = None,
        label_smoothing: float = 0.0,
        num_classes: int | None = None,
        partner: Partner = "flip",
        generator: torch.Generator | None = None,
        label_weight: LabelWeight = "effective",
        **method_params: Any,
    ) -> None:
        names, weights = _parse_methods(methods, switch_prob)
        params = {str(n): registry.parameters(n) for n in names}
        check_method_params(method_params, params)
        self.methods = [
            _build_method(n, {k: v for k, v in method_params.items() if k in params[str(n)]})
            for n in names
        ]
        self.method_names = [
            n if isinstance(n, str) else m.name for n, m in zip(names, self.methods, strict=True)
        ]
        # scaled by the largest first: a sum of huge weights (1e308) must not overflow
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.max()
        self.weights = self.weights / self.weights.sum()
        if isinstance(alpha, Mapping):
            check_alpha_names(alpha, self.method_names)
            self.alphas = [
                check_alpha(f"alpha[{n!r}]", alpha.get(n, 1.0)) for n in self.method_names
            ]
        else:
            self.alphas = [check_alpha("alpha", alpha)] * len(self.methods)
        self.mode: Mode = check_choice("mode", mode, ("batch", "pair", "elem"))
        self.partner: Partner = check_choice("partner", partner, ("flip", "random"))
        self.label_weight: LabelWeight = check_choice(
            "label_weight", label_weight, ("effective", "nominal")
        )
        if num_classes is not None:
            num_classes = check_positive_int("num_classes", num_classes)
        self.generator = check_generator(generator)
        self.prob = check_unit("prob", prob)
        self.label_smoothing = check_unit("label_smoothing", label_smoothing)
        self.num_classes = num_classes
        self._requires_model = any(registry.requires_model(m) for m in self.methods)
        self._all_masks = all(isinstance(m, _masks.MaskSampler) for m in self.methods)
        self._no_mix = tuple(i for i, m in enumerate(self.methods) if isinstance(m, _masks.NoMix))
        self._draw_lock = threading.Lock()
        self._local = threading.local()  # per-thread workspace of in-place mixing

    @property
    def requires_model(self) -> bool:
        """Whether a call needs ``model=`` (PuzzleMix's saliency, Manifold Mixup's hook)."""
        return self._requires_model

    def __repr__(self) -> str:
        shares = (float(w) for w in self.weights / self.weights.sum())
        methods = dict(zip(self.method_names, shares, strict=True))
        return (
            f"Mixer(methods={methods}, alpha={self.alphas}, mode={self.mode!r}, prob={self.prob}, "
            f"label_smoothing={self.label_smoothing}, num_classes={self.num_classes}, "
            f"partner={self.partner!r}, label_weight={self.label_weight!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_draw_lock"], state["_local"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._draw_lock = threading.Lock()
        self._local = threading.local()

    def __copy__(self) -> Mixer:
        new = Mixer.__new__(Mixer)
        new.__setstate__(self.__getstate__())
        return new

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The generator's state (``None`` when the global RNG is used), for checkpoints."""
        return {"generator": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (exactly the key ``"generator"``)."""
        value = check_generator_state(state, self.generator is not None)
        if value is not None and self.generator is not None:
            self.generator.set_state(value)

    # ---- sample -------------------------------------------------------------------------------
    def sample(
        self,
        batch_size: int,
        height: int,
        width: int,
        *,
        device: torch.device | str | None = None,
        lam: float | None = None,
    ) -> MixPlan:
        """Draw partners, λ, method and applied flag per unit, and the masks, for a batch of
        ``batch_size`` images of ``height × width`` on ``device`` (default: the generator's).

        ``lam`` fixes λ for every unit instead of drawing it from Beta(α, α) (figures, tests,
        a sweep over λ); everything else is drawn as usual. A batch of one has no partner: its
        plan leaves the image unmixed.
        """
        batch = check_batch_size(batch_size, self.mode)
        height = check_positive_int("height", height)
        width = check_positive_int("width", width)
        if device is None:
            device = self.generator.device if self.generator is not None else "cpu"
        device = torch.device(device)
        fixed = None if lam is None else check_unit("lam", lam)
        with self._draw_lock:
            return draw_plan(self, batch, height, width, device, fixed, self._all_masks)

    # ---- apply --------------------------------------------------------------------------------
    def apply(
        self,
        images: Tensor,
        plan: MixPlan | MixInfo,
        *,
        inplace: bool = False,
        model: nn.Module | None = None,
        labels: Tensor | None = None,
    ) -> Applied:
        """Mix ``images`` ``[B, C, H, W]`` by ``plan``: ``x̃ = M ⊙ x + (1 − M) ⊙ x[partner]``.

        Returns ``(mixed images, measured)``: :class:`~unimix.plan.Measured` holds the λ̄ actually
        applied per row (the mask's mean in the images' dtype; the images' λ̄ for image-dependent
        methods), which :meth:`targets` takes. The plan is never written to, so one plan applied
        twice to the same inputs gives the same outputs. Any tensor of the plan's batch size and
        size mixes the same way (e.g. images and their segmentation maps; integer class-id maps
        are copied pixel by pixel, which needs binary masks). ``inplace=True`` writes into
        ``images``. ``model`` (and ``labels``) are for the methods that need them (PuzzleMix,
        Manifold Mixup).
        """
        integer_map = isinstance(images, Tensor) and images.dtype in _INTEGER_MAPS
        x = images if integer_map else check_images(images)
        plan = _the_plan(plan)
        check_plan_fits(x, plan, self.method_names)
        check_inplace(x, inplace)
        if integer_map:
            return Applied(*apply_map(x, plan, inplace))
        return Applied(*self._apply(x, plan, inplace, model, labels))

    def _apply(
        self,
        x: Tensor,
        plan: MixPlan,
        inplace: bool,
        model: nn.Module | None,
        labels: Tensor | None,
    ) -> tuple[Tensor, Measured]:
        """:meth:`apply` on checked arguments: image methods' rows first (they read the original
        pixels), then the kernel of the masks' kind, unmixed rows restored as exact copies."""
        if torch.compiler.is_compiling() and self._all_masks:
            masks, lam_eff, _ = graph_tensors(plan)
            return traced_blend(x, plan.partner, masks, lam_eff, inplace)
        image_rows = []
        if not self._all_masks and plan.needs_images:  # they read the original rows: first
            context: dict[str, Any] = {"model": model}
            if labels is not None:
                context["labels"] = labels
            device = self.generator.device if self.generator is not None else torch.device("cpu")
            image_rows = run_image_methods(self.methods, x, plan, context, device)
        kind = mask_kind(plan, x, self._no_mix)
        copied = copied_rows(plan, self._no_mix, self.prob) if kind != "copy" else None
        kept = x.index_select(0, copied) if copied is not None and inplace else None
        ws = self._workspace(x) if inplace or kind == "select" else None
        out, lam_u, masks = apply_masks(x, plan, kind, x if inplace else None, ws, bool(image_rows))
        if copied is not None:  # unmixed rows are copies, never arithmetic (NaN stays put)
            out.index_copy_(0, copied, kept if kept is not None else x.index_select(0, copied))
        lam_rows = plan.spread(lam_u)
        if image_rows:
            lam_rows = lam_rows.clone()
            for rows, mixed, lam_rows_m in image_rows:
                out[rows] = mixed
                lam_rows[rows] = lam_rows_m
        return out, Measured(lam_rows, masks)

    def _workspace(self, x: Tensor) -> Tensor:
        """This thread's reusable gather buffer for in-place mixing (no fresh allocation)."""
        ws = getattr(self._local, "workspace", None)
        like = (x.shape, x.dtype, x.device, x.stride())
        if ws is None or (ws.shape, ws.dtype, ws.device, ws.stride()) != like:
            ws = self._local.workspace = torch.empty_like(x)
        return ws

    def dense_targets(self, maps: Tensor, plan: MixPlan | MixInfo, num_classes: int) -> Tensor:
        """Per-pixel soft targets ``[B, K, H, W]`` for integer label maps ``[B, H, W]`` or
        ``[B, 1, H, W]`` (segmentation): ``M ⊙ onehot(s) + (1 − M) ⊙ onehot(s[partner])``, each
        pixel's classes weighted by the mask of the plan (rows sum to 1 for every mask method)."""
        plan = _the_plan(plan)
        num_classes = check_positive_int("num_classes", num_classes)
        return dense_targets(check_label_maps(maps, plan, num_classes), plan, num_classes)

    # ---- targets ------------------------------------------------------------------------------
    def targets(
        self, labels: Tensor, plan: MixPlan | MixInfo, measured: Measured | Applied | None = None
    ) -> Tensor:
        """Soft targets ``[B, K]``: ``w ⊙ y + (1 − w) ⊙ y[partner]`` with ``w`` the label weight
        per row: ``λ̄`` as :meth:`apply` measured it (``measured``, what it returned), or the
        drawn λ under ``label_weight="nominal"``; ``labels`` are class indices ``[B]`` or targets
        ``[B, K]``, smoothed first if ``label_smoothing``. Without ``measured`` the plan's float32
        λ̄ is used (exact for float32 images), which image-dependent methods do not have."""
        if isinstance(plan, MixInfo):
            plan, measured = plan.plan, plan.measured if measured is None else measured
        plan = _the_plan(plan)
        measured = check_measured(
            measured.measured if isinstance(measured, Applied) else measured, Measured
        )
        device = plan.partner.device
        onehot = one_hot_targets(
            labels, self.num_classes, plan.batch_size, self.label_smoothing, device
        )
        return mix_targets(onehot, plan.partner, self._label_weight(plan, measured))

    def _label_weight(self, plan: MixPlan, measured: Measured | None) -> Tensor | float:
        """``[B]`` own-label weights; one number where one mask covers the batch (CPU)."""
        if plan.label_weight == "nominal" or measured is None:
            if plan.label_weight != "nominal" and not self._all_masks and plan.needs_images:
                raise ValueError(
                    "this plan uses an image-dependent method, whose λ̄ depends on the images: "
                    "pass what Mixer.apply(images, plan) returned: "
                    "Mixer.targets(labels, plan, measured)"
                )
            nominal = plan.label_weight == "nominal"
            weights = plan.unit_lam if nominal else plan.unit_lam_effective  # per unit
        else:
            weights = measured.lam_effective  # per row
        if plan.mode == "batch" and self._all_masks and weights.device.type == "cpu":
            return float(weights[0])  # one weight for the batch: a scalar label mix
        return weights if weights.shape[0] == plan.batch_size else plan.spread(weights)

    # ---- the call -----------------------------------------------------------------------------
    def __call__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        inplace: bool = False,
        return_info: bool = False,
        model: nn.Module | None = None,
        batch_labels: Tensor | None = None,
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, MixInfo]:
        """``plan = sample(...)``, ``apply(images, plan)``, ``targets(labels, plan)``; returns the
        mixed images and targets (and the plan with ``return_info=True``). ``batch_labels`` is
        accepted for older PuzzleMix code and ignored (``labels`` are passed on)."""
        x = check_images(images)
        batch, _, height, width = x.shape
        onehot = one_hot_targets(labels, self.num_classes, batch, self.label_smoothing, x.device)
        check_image_size(batch, height, width)
        check_inplace(x, inplace)
        if torch.compiler.is_compiling() and self._all_masks:
            plan, masks, lam_eff, lam = draw_for_graph(self, batch, height, width, x.device)
            out, measured = traced_blend(x, plan.partner, masks, lam_eff, inplace)
            weight: Tensor | float = (
                lam if plan.label_weight == "nominal" else measured.lam_effective
            )
        else:
            plan = self.sample(batch, height, width, device=x.device)
            out, measured = self._apply(x, plan, inplace, model, labels)
            weight = self._label_weight(plan, measured)
        targets = mix_targets(onehot, plan.partner, weight)
        return (out, targets, MixInfo(plan, measured)) if return_info else (out, targets)


_INTEGER_MAPS = (torch.int16, torch.int32, torch.int64)  # class-id maps: never blended


def _the_plan(plan: object) -> MixPlan:
    plan = plan.plan if isinstance(plan, MixInfo) else plan
    if not isinstance(plan, MixPlan):
        raise TypeError(f"plan must be a MixPlan from Mixer.sample, got {type(plan).__name__}")
    return plan


def check_mixer(**mixer_args: Any) -> None:
    """Raise exactly the ``ValueError``/``TypeError`` that ``Mixer(**mixer_args)`` raises: the
    one test of whether a Mixer can be built from a configuration (``TrainConfig``), so a config
    is valid exactly when its Mixer is (unknown or repeated methods, parameters no method takes,
    ``switch_prob`` with other than two methods, ``alpha`` for absent methods)."""
    Mixer(**mixer_args)
