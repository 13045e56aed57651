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
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from unimix import masks as _masks
from unimix import registry
from unimix.blend import blend, blend_exact, paste_box, select, to_uint8
from unimix.checks import (
    check_alpha,
    check_choice,
    check_positive_int,
    check_probability_weights,
    check_unit,
)
from unimix.mixmethod import MixMethod
from unimix.plan import Applied, Measured, MixInfo, MixPlan, unit_masks
from unimix.targets import (
    SoftTargetCrossEntropy,
    mix_targets,
    one_hot_targets,
    soft_target_cross_entropy,
)

__all__ = [
    "Mixer",
    "MixPlan",
    "MixInfo",
    "Measured",
    "Applied",
    "MixMethod",
    "register_method",
    "available_methods",
    "method_parameters",
    "soft_target_cross_entropy",
    "SoftTargetCrossEntropy",
    "one_hot_targets",
]

Mode = Literal["batch", "pair", "elem"]
Partner = Literal["flip", "random"]
LabelWeight = Literal["effective", "nominal"]
Method = _masks.MaskSampler | MixMethod


def register_method(name: str) -> Callable[[type[MixMethod]], type[MixMethod]]:
    """Class decorator: register an image-dependent :class:`MixMethod` under ``name`` in
    :mod:`unimix.registry` (names are unique across mask samplers and image methods)."""
    return registry.register(name, kind="image")


def available_methods() -> list[str]:
    """Every method name :class:`Mixer` accepts: mask samplers and image-dependent methods."""
    return registry.available()


def method_parameters(name: object) -> set[str]:
    """Names of the parameters that the method registered as ``name`` takes (e.g. ``{"r",
    "boundary"}`` for HMix); empty for unknown names and instances."""
    return registry.parameters(name)


def _build_method(name: str | Method, params: Mapping[str, Any]) -> Method:
    if isinstance(name, (_masks.MaskSampler, MixMethod)):
        return name
    if not isinstance(name, str) or name not in registry.available():
        raise ValueError(
            f"unknown mixing method {name!r} in methods; known methods: "
            f"{', '.join(available_methods())}"
        )
    return registry.get(name, **params)


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
        names, weights = self._parse_methods(methods, switch_prob)
        for key in method_params:
            if not any(key in method_parameters(n) for n in names):
                raise TypeError(
                    f"unknown method parameter {key!r}: none of the methods {names} takes it"
                )
        self.methods = [
            _build_method(n, {k: v for k, v in method_params.items() if k in method_parameters(n)})
            for n in names
        ]
        self.method_names = [
            n if isinstance(n, str) else m.name for n, m in zip(names, self.methods, strict=True)
        ]
        # scaled by the largest first: a sum of huge weights (1e308) must not overflow
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.max()
        self.weights = self.weights / self.weights.sum()
        self.alphas = self._parse_alpha(alpha)
        self.mode: Mode = check_choice("mode", mode, ("batch", "pair", "elem"))
        self.partner: Partner = check_choice("partner", partner, ("flip", "random"))
        self.label_weight: LabelWeight = check_choice(
            "label_weight", label_weight, ("effective", "nominal")
        )
        if num_classes is not None:
            num_classes = check_positive_int("num_classes", num_classes)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.prob = check_unit("prob", prob)
        self.label_smoothing = check_unit("label_smoothing", label_smoothing)
        self.num_classes = num_classes
        self.generator = generator
        self._requires_model = any(registry.requires_model(m) for m in self.methods)
        self._all_masks = all(isinstance(m, _masks.MaskSampler) for m in self.methods)
        self._cumulative = (self.weights / self.weights.sum()).cumsum(0).tolist()
        self._flip_cache: dict[tuple[int, torch.device], Tensor] = {}
        self._draw_lock = threading.Lock()
        self._local = threading.local()  # per-thread workspace of in-place mixing

    def _parse_alpha(self, alpha: float | Mapping[str, float]) -> list[float]:
        if not isinstance(alpha, Mapping):
            return [check_alpha("alpha", alpha)] * len(self.methods)
        unknown = set(alpha) - set(self.method_names)
        if unknown:
            raise ValueError(f"alpha names methods not in methods: {sorted(unknown)}")
        return [check_alpha(f"alpha[{n!r}]", alpha.get(n, 1.0)) for n in self.method_names]

    @staticmethod
    def _parse_methods(methods: object, switch_prob: float | None) -> tuple[list[Any], list[float]]:
        if isinstance(methods, (str, _masks.MaskSampler, MixMethod)):
            names, weights = [methods], [1.0]
        elif isinstance(methods, Mapping):
            parsed = check_probability_weights("methods", methods)
            names, weights = list(parsed), list(parsed.values())
        elif isinstance(methods, Sequence) and len(methods) > 0:
            names, weights = list(methods), [1.0] * len(methods)
        else:
            raise ValueError(
                f"methods must be a name, a non-empty list of names or a name→weight mapping; "
                f"known methods: {', '.join(available_methods())}"
            )
        if len(set(map(str, names))) != len(names):
            raise ValueError(f"methods lists a method twice: {names}")
        if switch_prob is not None:
            switch_prob = check_unit("switch_prob", switch_prob)
            if len(names) != 2 or isinstance(methods, Mapping):
                raise ValueError(
                    "switch_prob needs exactly two methods given as a list; use weights otherwise"
                )
            weights = [1.0 - switch_prob, switch_prob]
        return names, weights

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
        new._flip_cache = {}
        return new

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The generator's state (``None`` when the global RNG is used), for checkpoints."""
        return {"generator": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (exactly the key ``"generator"``)."""
        if not isinstance(state, Mapping) or set(state) != {"generator"}:
            keys = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(
                f"state must be a Mixer.state_dict() mapping with the key 'generator', got {keys}"
            )
        value = state["generator"]
        if value is None:
            return
        if not isinstance(value, Tensor) or value.dtype != torch.uint8:
            raise TypeError("state['generator'] must be a uint8 tensor from Generator.get_state()")
        if self.generator is None:
            raise ValueError("the state has a generator state but this Mixer has no generator")
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
        batch_size = check_positive_int("batch_size", batch_size)
        height = check_positive_int("height", height)
        width = check_positive_int("width", width)
        if self.mode == "pair" and batch_size % 2:
            raise ValueError(
                f"mode='pair' needs an even batch, got {batch_size}; use mode='elem' or "
                "drop_last=True"
            )
        device = torch.device(device) if device is not None else self._rand_device()
        fixed = None if lam is None else check_unit("lam", lam)
        with self._draw_lock:
            if self.mode == "batch" and self._all_masks:
                return self._sample_batch(batch_size, height, width, device, fixed)
            return self._sample_units(batch_size, height, width, device, fixed)

    def _rand_device(self) -> torch.device:
        return self.generator.device if self.generator is not None else torch.device("cpu")

    def _flip(self, batch: int, device: torch.device) -> Tensor:
        key = (batch, device)
        cached = self._flip_cache.get(key)
        if cached is None:
            cached = torch.arange(batch - 1, -1, -1, device=device)
            self._flip_cache = {key: cached}
        return cached

    def _draw_partner(self, batch: int, device: torch.device) -> Tensor:
        if self.partner == "flip" or batch == 1:
            return self._flip(batch, device)
        perm = torch.randperm(batch, generator=self.generator, device=self._rand_device())
        if self.mode == "pair":  # a random pairing: consecutive entries of perm are partners
            partner = torch.empty_like(perm)
            partner[perm[0::2]] = perm[1::2]
            partner[perm[1::2]] = perm[0::2]
            perm = partner
        return perm.to(device)

    def _sample_batch(
        self, batch: int, height: int, width: int, device: torch.device, fixed: float | None
    ) -> MixPlan:
        """``batch`` mode with mask methods: one λ, one mask, drawn as Python numbers."""
        g = self.generator
        applied, m = batch > 1, 0
        if applied and (self.prob < 1.0 or len(self.methods) > 1):
            u_apply, u_method = torch.rand(2, generator=g, device=self._rand_device()).tolist()
            applied = u_apply < self.prob
            m = next(
                (i for i, c in enumerate(self._cumulative) if u_method < c), len(self.methods) - 1
            )
        partner = self._draw_partner(batch, device)
        samples: list[_masks.MaskSample | None] = [None] * len(self.methods)
        lam = lam_eff = 1.0
        if applied:
            sampler: _masks.MaskSampler = self.methods[m]  # type: ignore[assignment]
            lam = _masks.sample_lambda_one(self.alphas[m], g) if fixed is None else fixed
            samples[m] = sample = sampler.sample_one(lam, height, width, device, g)
            lam_eff = float(sample.lam[0])
            if sampler.ignores_lam:
                lam = lam_eff
        return MixPlan._trusted(
            batch_size=batch, height=height, width=width, mode="batch", partner=partner,
            unit_of_row=None, unit_lam=lam, unit_lam_effective=lam_eff, unit_method=m,
            unit_applied=applied, samples=tuple(samples), method_names=tuple(self.method_names),
            label_weight=self.label_weight, image_seed=None,
        )  # fmt: skip

    def _sample_units(
        self, batch: int, height: int, width: int, device: torch.device, fixed: float | None
    ) -> MixPlan:
        partner = self._draw_partner(batch, device)
        unit = self._unit_of_row(batch, partner)
        if batch > 1:
            n_units = {"batch": 1, "pair": batch // 2, "elem": batch}[self.mode]
            lam, method, applied, samples = self._draw_units(n_units, height, width, device, fixed)
        else:  # a single image has no partner: returned unmixed with its own target
            lam, method = torch.ones(1), torch.zeros(1, dtype=torch.long)
            applied, samples = torch.zeros(1, dtype=torch.bool), [None] * len(self.methods)
        lam, method, applied = (t.to(device) for t in (lam, method, applied))
        lam_eff = self._unit_lam_effective(lam, method, applied, samples)
        seed = None
        if not self._all_masks:  # the image methods' random choices are drawn here too
            g, dev = self.generator, self._rand_device()
            seed = int(torch.randint(0, 2**62, (1,), generator=g, device=dev))
        return MixPlan._trusted(
            batch_size=batch, height=height, width=width, mode=self.mode, partner=partner,
            unit_of_row=None if self.mode == "batch" else unit, unit_lam=lam,
            unit_lam_effective=lam_eff, unit_method=method, unit_applied=applied,
            samples=tuple(samples), method_names=tuple(self.method_names),
            label_weight=self.label_weight, image_seed=seed,
        )  # fmt: skip

    def _unit_of_row(self, batch: int, partner: Tensor) -> Tensor:
        rows = torch.arange(batch, device=partner.device)
        if self.mode == "elem":
            return rows
        if self.mode == "batch":
            return torch.zeros_like(rows)
        if self.partner == "flip":
            return torch.minimum(rows, batch - 1 - rows)
        # random pairing: a pair is numbered by its smaller row index among the pairs
        first = torch.minimum(rows, partner)
        return torch.unique(first, return_inverse=True)[1]

    def _draw_units(
        self, n: int, height: int, width: int, device: torch.device, fixed: float | None = None
    ) -> tuple[Tensor, Tensor, Tensor, list[_masks.MaskSample | None]]:
        """λ, method index and applied flag per unit, and each mask method's samples."""
        g, dev = self.generator, self._rand_device()
        applied = torch.ones(n, dtype=torch.bool, device=dev)
        if self.prob < 1.0:
            applied = torch.rand(n, generator=g, device=dev) < self.prob
        if len(self.methods) == 1:
            method = torch.zeros(n, dtype=torch.long, device=dev)
        else:
            method = torch.multinomial(self.weights.to(dev), n, replacement=True, generator=g)
        if len(self.methods) == 1 and self.prob == 1.0:
            lam = self._lambdas(0, n, dev, fixed)
            only = self.methods[0]
            if not isinstance(only, _masks.MaskSampler):
                return lam, method, applied, [None]
            sample = only.sample(lam, height, width, device, g)
            if only.ignores_lam:
                lam = sample.lam.to(dev)
            return lam, method, applied, [sample]
        lam = torch.ones(n, device=dev)
        samples: list[_masks.MaskSample | None] = []
        for m, obj in enumerate(self.methods):
            sel = (method == m) & applied
            count = int(sel.sum())
            sample = None
            if count:
                lam[sel] = self._lambdas(m, count, dev, fixed)
                if isinstance(obj, _masks.MaskSampler):
                    sample = obj.sample(lam[sel], height, width, device, g)
                    if obj.ignores_lam:
                        lam[sel] = sample.lam.to(dev)
            samples.append(sample)
        return lam, method, applied, samples

    def _lambdas(self, m: int, n: int, dev: torch.device, fixed: float | None) -> Tensor:
        """``n`` λ of method ``m``: Beta(α_m, α_m) draws, or ``fixed`` for each."""
        if fixed is not None:
            return torch.full((n,), fixed, device=dev)
        return _masks.sample_lambda(self.alphas[m], n, self.generator, dev)

    def _unit_lam_effective(
        self,
        lam: Tensor,
        method: Tensor,
        applied: Tensor,
        samples: Sequence[_masks.MaskSample | None],
    ) -> Tensor:
        """λ̄ per unit from the samples: 1 where not mixed, NaN where an image method mixes."""
        present = [m for m, s in enumerate(samples) if s is not None]
        if len(present) == 1 and samples[present[0]].lam.shape[0] == lam.shape[0]:  # type: ignore[union-attr]
            return samples[present[0]].lam.to(lam.device)  # type: ignore[union-attr]
        lam_eff = torch.ones_like(lam)
        for m, obj in enumerate(self.methods):
            sel = (method == m) & applied
            sample = samples[m]
            if sample is not None:
                lam_eff[sel] = sample.lam.to(lam.device)
            elif isinstance(obj, MixMethod):
                lam_eff[sel] = float("nan")
        return lam_eff

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
        size mixes the same way (e.g. images and their segmentation maps). ``inplace=True``
        writes into ``images``. ``model`` (and ``labels``) are for the methods that need them
        (PuzzleMix, Manifold Mixup).
        """
        integer_map = isinstance(images, Tensor) and _is_integer_map(images)
        x = images if integer_map else self._check_images(images)
        if isinstance(plan, MixInfo):
            plan = plan.plan
        if not isinstance(plan, MixPlan):
            raise TypeError(f"plan must be a MixPlan from Mixer.sample, got {type(plan).__name__}")
        if (x.shape[0], *x.shape[2:]) != (plan.batch_size, plan.height, plan.width):
            raise ValueError(
                f"images has shape {tuple(x.shape)} but the plan was drawn for batch_size="
                f"{plan.batch_size}, height={plan.height}, width={plan.width}"
            )
        if plan.partner.device != x.device:
            raise ValueError(
                f"images are on {x.device} but the plan was drawn on {plan.partner.device}; "
                f"sample with device=images.device"
            )
        if len(plan.method_names) != len(self.methods) or plan.method_names != tuple(
            self.method_names
        ):
            raise ValueError(
                f"the plan was drawn for methods {list(plan.method_names)} but this Mixer has "
                f"{self.method_names}; apply a plan with the Mixer that sampled it"
            )
        _check_inplace(x, inplace)
        if integer_map:
            return self._apply_map(x, plan, inplace)
        return Applied(*self._apply(x, plan, inplace, model, labels))

    def _apply_map(self, maps: Tensor, plan: MixPlan, inplace: bool) -> Applied:
        """Integer label maps: every pixel copied from one of the two sources, which only binary
        masks allow (a blend would invent class ids)."""
        present = [s for s in plan.samples if s is not None]
        masks = plan.masks
        if (
            masks is None
            or not all(s.binary or s.constant for s in present)
            or not bool(((masks == 0) | (masks == 1)).all())
        ):
            raise ValueError(
                f"the plan's masks are not binary ({list(plan.method_names)}), so a mix of integer "
                f"label maps ({maps.dtype}) would blend class ids; use "
                "Mixer.dense_targets(maps, plan, num_classes) for per-pixel soft targets"
            )
        keep = masks.bool().expand(plan.batch_size, 1, plan.height, plan.width)
        out = select(maps, plan.partner, keep, maps if inplace else None)
        return Applied(out, Measured(masks.mean(dim=(1, 2, 3)).expand(plan.batch_size)))

    def dense_targets(self, maps: Tensor, plan: MixPlan | MixInfo, num_classes: int) -> Tensor:
        """Per-pixel soft targets ``[B, K, H, W]`` for integer label maps ``[B, H, W]`` or
        ``[B, 1, H, W]`` (segmentation): ``M ⊙ onehot(s) + (1 − M) ⊙ onehot(s[partner])``, each
        pixel's classes weighted by the mask of the plan (rows sum to 1 for every mask method)."""
        if isinstance(plan, MixInfo):
            plan = plan.plan
        if not isinstance(plan, MixPlan):
            raise TypeError(f"plan must be a MixPlan from Mixer.sample, got {type(plan).__name__}")
        num_classes = check_positive_int("num_classes", num_classes)
        if not isinstance(maps, Tensor) or maps.is_floating_point() or maps.dtype == torch.bool:
            raise TypeError("maps must be an integer tensor of class ids [B, H, W] or [B, 1, H, W]")
        if maps.dim() == 4 and maps.shape[1] == 1:
            maps = maps[:, 0]
        if tuple(maps.shape) != (plan.batch_size, plan.height, plan.width):
            raise ValueError(
                f"maps has shape {tuple(maps.shape)} but the plan was drawn for "
                f"[{plan.batch_size}, {plan.height}, {plan.width}]"
            )
        if maps.numel() and (int(maps.min()) < 0 or int(maps.max()) >= num_classes):
            raise ValueError(
                f"maps must hold class ids in [0, num_classes={num_classes}), got "
                f"[{int(maps.min())}, {int(maps.max())}]"
            )
        masks = plan.masks
        if masks is None:
            raise ValueError(
                "dense_targets needs the plan's masks; an image-dependent method mixed a row"
            )
        onehot = torch.nn.functional.one_hot(maps.long(), num_classes).permute(0, 3, 1, 2)
        onehot = onehot.to(device=masks.device, dtype=torch.float32)
        partner = plan.partner.to(masks.device)
        return torch.lerp(onehot.index_select(0, partner), onehot, masks)

    def _apply(
        self,
        x: Tensor,
        plan: MixPlan,
        inplace: bool,
        model: nn.Module | None,
        labels: Tensor | None,
    ) -> tuple[Tensor, Measured]:
        """:meth:`apply` on checked arguments."""
        if torch.compiler.is_compiling() and not isinstance(plan.unit_method, Tensor):
            masks, lam = _traceable_tensors(plan)
            return self._apply_traceable(x, plan.partner, masks, lam, inplace)
        if not isinstance(plan.unit_method, Tensor):
            return self._apply_batch(x, plan, inplace)
        return self._apply_units(x, plan, inplace, model, labels)

    def _workspace(self, x: Tensor) -> Tensor:
        """This thread's reusable gather buffer for in-place mixing (no fresh allocation)."""
        ws = getattr(self._local, "workspace", None)
        if (
            ws is None
            or ws.shape != x.shape
            or ws.dtype != x.dtype
            or ws.device != x.device
            or ws.stride() != x.stride()
        ):
            ws = self._local.workspace = torch.empty_like(x)
        return ws

    def _blend(
        self,
        x: Tensor,
        partner: Tensor,
        w: Tensor | float,
        out: Tensor | None,
        exact: bool = False,
    ) -> Tensor:
        if exact and isinstance(w, Tensor):
            return blend_exact(x, partner, w, out)
        in_place = out is x and x.is_floating_point()
        return blend(x, partner, w, out, self._workspace(x) if in_place else None)

    def _apply_batch(self, x: Tensor, plan: MixPlan, inplace: bool) -> tuple[Tensor, Measured]:
        """One mask for the whole batch: nothing to do at ``λ̄ = 1``, a binary box pasted from the
        partner rows (only the box is written), anything else blended."""
        out = x if inplace else None
        sample = plan.samples[plan.unit_method] if plan.unit_applied else None  # type: ignore[index]
        lam_eff: float = plan.unit_lam_effective  # type: ignore[assignment]
        if sample is None:
            return (x.clone() if out is None else out), Measured(torch.ones(plan.batch_size))
        wdtype = x.dtype if x.is_floating_point() else torch.float32
        weights: Tensor | None = None
        if wdtype not in (torch.float32, torch.float64):
            # the label must weigh the mask actually applied: its values in the images' dtype
            if sample.constant:
                lam_eff = float(torch.tensor(lam_eff).to(wdtype))
            else:
                weights = sample.masks.to(wdtype)
                lam_eff = float(weights.float().mean())
        measured = Measured(torch.full((plan.batch_size,), lam_eff), weights)
        partner = plan.partner
        if sample.constant and lam_eff == 1.0:
            return (x.clone() if out is None else out), measured
        box = _pasted_box(sample)
        if box is not None:
            return paste_box(x, partner, box, out), measured
        if sample.constant:
            w = lam_eff if x.is_floating_point() else torch.tensor(lam_eff).view(1, 1, 1, 1)
            return self._blend(x, partner, w, out), measured
        if sample.binary and _select_exactly(x):
            return select(x, partner, sample.keep(), out, self._workspace(x)), measured
        masks = weights if weights is not None else sample.masks.to(wdtype)
        return self._blend(x, partner, masks, out), measured

    def _apply_traceable(
        self, x: Tensor, partner: Tensor, masks: Tensor, lam_eff: Tensor, inplace: bool
    ) -> tuple[Tensor, Measured]:
        """Mask methods under ``torch.compile``, in every mode: tensors only, no Python numbers
        and fixed shapes (a new λ, method or box is new data, not a new graph)."""
        wdtype = x.dtype if x.is_floating_point() else torch.float32
        weights = masks.to(device=x.device, dtype=wdtype)
        gathered = x.index_select(0, partner)
        if x.is_floating_point():  # weights 1 and 0 copy their pixel: a NaN stays in its image
            mixed = torch.where(
                weights == 1,
                x,
                torch.where(weights == 0, gathered, torch.lerp(gathered, x, weights)),
            )
        else:
            mixed = to_uint8(torch.lerp(gathered.float(), x.float(), weights))
        out = x.copy_(mixed) if inplace else mixed
        half = wdtype not in (torch.float32, torch.float64)
        if half:
            lam_eff = weights.float().mean(dim=(1, 2, 3))
        lam_rows = lam_eff.to(x.device).expand(x.shape[0])
        return out, Measured(lam_rows, weights if half else None)

    def _apply_units(
        self,
        x: Tensor,
        plan: MixPlan,
        inplace: bool,
        model: nn.Module | None,
        labels: Tensor | None,
    ) -> tuple[Tensor, Measured]:
        """Per-unit masks (``pair``/``elem`` modes, or image-dependent methods): returns the mixed
        batch and the λ̄ applied to each row."""
        wdtype = x.dtype if x.is_floating_point() else torch.float32
        image_results = self._run_image_methods(x, plan, model, labels)
        # units of image methods are blended with weight 1 here and overwritten afterwards
        lam_eff_u = plan.unit_lam_effective.nan_to_num(1.0)  # type: ignore[union-attr]
        present = [(m, s) for m, s in enumerate(plan.samples) if s is not None]
        constant = all(s.constant for _, s in present)
        exact = not constant and all(s.binary for _, s in present) and _select_exactly(x)
        # one binary sample for every unit: selected by its bool masks, no float masks made
        lazy_keep = (
            exact
            and plan.mode != "batch"
            and len(present) == 1
            and present[0][1].lam.shape[0] == lam_eff_u.shape[0]
        )
        weights_u = (
            None if constant or lazy_keep else unit_masks(plan, wdtype, ones_for_images=True)
        )
        applied_masks = None
        if wdtype not in (torch.float32, torch.float64) and not lazy_keep:
            # the label must weigh the mask actually applied: its values in the images' dtype
            # (0/1 masks are exact in every dtype)
            if weights_u is None:
                lam_eff_u = lam_eff_u.to(wdtype).float()
            else:
                lam_eff_u = weights_u.float().mean(dim=(1, 2, 3))
                applied_masks = _spread(weights_u, plan)
        exact_rows = self._copied_rows(plan)
        kept = x.index_select(0, exact_rows) if exact_rows is not None and inplace else None
        out = x if inplace else None
        if plan.mode == "batch":
            out = self._apply_one_unit(x, plan, weights_u, lam_eff_u, out)
        elif constant and all(isinstance(self.methods[m], _masks.NoMix) for m, _ in present):
            out = x.clone() if out is None else out  # nothing is mixed
        elif constant:
            w = _spread(lam_eff_u.to(wdtype).view(-1, 1, 1, 1), plan)
            out = self._blend(x, plan.partner, w, out)
        elif exact:
            keep = _spread(_units_keep(plan, weights_u), plan)
            out = select(x, plan.partner, keep, out, self._workspace(x))
        else:  # binary rows among blended ones stay exact copies where the batch has NaN/inf
            w = _spread(weights_u, plan)  # type: ignore[arg-type]
            mixed_binary = any(s.binary for _, s in present)
            out = self._blend(x, plan.partner, w, out, exact=mixed_binary and _select_exactly(x))
        if exact_rows is not None:  # unmixed rows are copies, never arithmetic (NaN stays put)
            out.index_copy_(
                0, exact_rows, kept if kept is not None else x.index_select(0, exact_rows)
            )
        lam_rows = _spread(lam_eff_u, plan)
        if image_results:
            lam_rows = lam_rows.clone()
            for rows, mixed, lam_rows_m in image_results:
                out[rows] = mixed
                lam_rows[rows] = lam_rows_m
        return out, Measured(lam_rows, applied_masks)

    def _copied_rows(self, plan: MixPlan) -> Tensor | None:
        """Rows left unmixed (``prob < 1``, or the ``none`` method) in a blend, or ``None``."""
        no_mix = [m for m, obj in enumerate(self.methods) if isinstance(obj, _masks.NoMix)]
        if self.prob == 1.0 and not no_mix:
            return None
        exact = ~plan.applied
        for m in no_mix:
            exact |= plan.method == m
        rows = exact.nonzero().squeeze(1)
        return rows if rows.numel() else None

    def _apply_one_unit(
        self,
        x: Tensor,
        plan: MixPlan,
        weights_u: Tensor | None,
        lam_eff_u: Tensor,
        out: Tensor | None,
    ) -> Tensor:
        """``batch`` mode drawn per unit (image methods in the mix, one unit)."""
        lam_eff = float(lam_eff_u[0])
        if weights_u is None:
            if lam_eff == 1.0 or lam_eff != lam_eff:
                return x.clone() if out is None else out
            w = lam_eff if x.is_floating_point() else torch.tensor(lam_eff).view(1, 1, 1, 1)
            return self._blend(x, plan.partner, w, out)
        return self._blend(x, plan.partner, weights_u, out)

    def _run_image_methods(
        self, x: Tensor, plan: MixPlan, model: nn.Module | None, labels: Tensor | None
    ) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Rows mixed by image-dependent methods: ``(rows, mixed rows, λ̄ of the rows)`` each.
        They read the original rows, so they run before any in-place mix."""
        if self._all_masks or not plan.needs_images:
            return []
        results = []
        unit = (
            plan.unit_of_row
            if plan.unit_of_row is not None
            else torch.zeros(plan.batch_size, dtype=torch.long, device=x.device)
        )
        method_rows = plan.method
        applied_rows = plan.applied
        context: dict[str, Any] = {"model": model}
        seed = plan.image_seed if plan.image_seed is not None else 0
        if labels is not None:
            context["labels"] = labels
        for m, obj in enumerate(self.methods):
            if not isinstance(obj, MixMethod):
                continue
            rows = ((method_rows == m) & applied_rows).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            partner_rows = plan.partner[rows]
            lam_units: Tensor = plan.unit_lam  # type: ignore[assignment]
            mixed, lam_rows = obj.mix(
                x.index_select(0, rows),
                x.index_select(0, partner_rows),
                lam_units[unit[rows]],
                generator=torch.Generator(self._rand_device()).manual_seed(seed + m),
                context={**context, "rows": rows, "partner_rows": partner_rows},
            )
            if not x.is_floating_point():
                mixed = to_uint8(mixed.float())
            lam_rows = lam_rows.to(device=x.device, dtype=torch.float32)
            results.append((rows, mixed.to(x.dtype), lam_rows))
        return results

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
        if not isinstance(plan, MixPlan):
            raise TypeError(f"plan must be a MixPlan from Mixer.sample, got {type(plan).__name__}")
        if isinstance(measured, Applied):
            measured = measured.measured
        if measured is not None and not isinstance(measured, Measured):
            raise TypeError(
                f"measured must be what Mixer.apply returned, got {type(measured).__name__}"
            )
        device = plan.partner.device
        onehot = one_hot_targets(
            labels, self.num_classes, plan.batch_size, self.label_smoothing, device
        )
        return mix_targets(onehot, plan.partner, self._label_weight(plan, measured))

    def _label_weight(self, plan: MixPlan, measured: Measured | None) -> Tensor | float:
        if plan.label_weight == "nominal":
            lam = plan.unit_lam
            return _spread(lam, plan) if isinstance(lam, Tensor) else lam
        if measured is not None:
            lam_eff = measured.lam_effective
            if not isinstance(plan.unit_method, Tensor) and lam_eff.device.type == "cpu":
                return float(lam_eff[0])  # one weight for the batch: a scalar label mix
            return lam_eff
        if plan.needs_images:
            raise ValueError(
                "this plan uses an image-dependent method, whose λ̄ depends on the images: "
                "pass what Mixer.apply(images, plan) returned: Mixer.targets(labels, plan, measured)"
            )
        lam_eff = plan.unit_lam_effective
        return _spread(lam_eff, plan) if isinstance(lam_eff, Tensor) else lam_eff

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
        x = self._check_images(images)
        batch, _, height, width = x.shape
        onehot = one_hot_targets(labels, self.num_classes, batch, self.label_smoothing, x.device)
        if batch == 0:
            raise ValueError("images is an empty batch")
        if height == 0 or width == 0:
            raise ValueError(f"images has an empty image size {height}×{width}")
        _check_inplace(x, inplace)
        if torch.compiler.is_compiling() and self._all_masks:
            plan, masks, lam_eff, lam = _sample_outside_graph(self, batch, height, width, x.device)
            out, measured = self._apply_traceable(x, plan.partner, masks, lam_eff, inplace)
            weight = lam if plan.label_weight == "nominal" else measured.lam_effective
        else:
            plan = self.sample(batch, height, width, device=x.device)
            out, measured = self._apply(x, plan, inplace, model, labels)
            weight = self._label_weight(plan, measured)
        targets = mix_targets(onehot, plan.partner, weight)
        return (out, targets, MixInfo(plan, measured)) if return_info else (out, targets)

    @staticmethod
    def _check_images(images: Tensor) -> Tensor:
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(f"images must be 4-D [B, C, H, W], got shape {tuple(images.shape)}")
        if not (images.is_floating_point() or images.dtype == torch.uint8):
            raise TypeError(f"images must be a floating-point or uint8 tensor, got {images.dtype}")
        return images


@torch.compiler.disable
def _sample_outside_graph(
    mixer: Mixer, batch: int, height: int, width: int, device: torch.device
) -> tuple[MixPlan, Tensor, Tensor, Tensor]:
    """The draw of a compiled call, run eagerly: the plan, its mask ``[1, 1, H, W]``, λ̄ and the
    drawn λ (``[1]`` each) as tensors for the graph."""
    plan = mixer.sample(batch, height, width, device=device)
    masks = plan.masks
    assert masks is not None
    return plan, masks.contiguous(), plan.lam_effective, plan.lam


def _traceable_tensors(plan: MixPlan) -> tuple[Tensor, Tensor]:
    """``[1, 1, H, W]`` mask and ``[1]`` λ̄ of a ``batch``-mode plan, as tensors."""
    masks = unit_masks(plan, torch.float32)
    assert masks is not None
    lam_eff = torch.tensor([float(plan.unit_lam_effective)], device=masks.device)
    return masks, lam_eff


def _is_integer_map(x: Tensor) -> bool:
    """Integer class-id maps (int16/int32/int64): never blended."""
    return x.dtype in (torch.int16, torch.int32, torch.int64)


def _select_exactly(x: Tensor) -> bool:
    """Whether binary masks must select pixel bits rather than blend: ``lerp`` with weights 0/1 is
    an exact copy of finite values, but ``0 · NaN`` is NaN. uint8 has no such values; on CPU one
    reduction tells whether the batch has any (a sum is finite iff every value is, short of an
    overflow, which only sends it to the exact path); on GPU the selection is always exact (no
    host synchronisation)."""
    if not x.is_floating_point():
        return False
    if x.device.type != "cpu":
        return True
    return not bool(torch.isfinite(x.sum()))


def _check_inplace(x: Tensor, inplace: bool) -> None:
    if inplace and x.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            "inplace=True cannot mix a tensor that requires grad; pass inplace=False "
            "(or mix before the tensor enters the graph)"
        )


def _pasted_box(sample: _masks.MaskSample) -> tuple[int, int, int, int] | None:
    """The mask's box when it is a CutMix-style binary box (1 outside), else ``None``."""
    if sample.boxes is None or sample.outside is None or float(sample.outside[0]) != 1.0:
        return None
    y0, y1, x0, x1 = sample.boxes[0].tolist()
    return y0, y1, x0, x1


def _spread(per_unit: Tensor, plan: MixPlan) -> Tensor:
    """Per-unit values spread to the rows (``elem``: one unit per row already)."""
    if plan.unit_of_row is None:
        return per_unit.expand(plan.batch_size, *per_unit.shape[1:])
    return per_unit if plan.mode == "elem" else per_unit.index_select(0, plan.unit_of_row)


def _units_keep(plan: MixPlan, weights_u: Tensor | None) -> Tensor:
    """Bool per-unit masks of binary samples: from the sampler when one sample covers every unit
    (no float masks made), else from the float masks."""
    present = [s for s in plan.samples if s is not None]
    n_units = plan.unit_method.shape[0]  # type: ignore[union-attr]
    if len(present) == 1 and present[0].lam.shape[0] == n_units and weights_u is None:
        return present[0].keep()
    assert weights_u is not None
    return weights_u.bool()
