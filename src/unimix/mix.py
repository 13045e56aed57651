"""The mixing engine: one vectorised :class:`Mixer` for every MSDA method, mode and partner rule.

For a batch ``x`` with labels ``y``, each row ``k`` is mixed with a partner row ``j = partner[k]``:

    x̃_k = M_k ⊙ x_k + (1 − M_k) ⊙ x_j ,      ỹ_k = λ̄_k y_k + (1 − λ̄_k) y_j ,   λ̄_k = mean(M_k)

where ``M_k`` comes from a mask sampler of :mod:`unimix.masks` given ``λ ~ Beta(α, α)``
(Park, Yun & Chun, NeurIPS 2022, section 2). The label weight is the *effective* ratio: the mean
of the mask actually applied, after clipping and rounding, in the images' dtype
(``label_weight="nominal"`` weights by the drawn λ instead, as the paper's reference code does).

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
from unimix.blend import blend, paste_box, select, to_uint8
from unimix.checks import (
    check_alpha,
    check_choice,
    check_positive_int,
    check_probability_weights,
    check_unit,
)
from unimix.mixmethod import MixMethod
from unimix.plan import MixInfo, MixPlan, unit_masks
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
            actually applied; ``"nominal"`` by the drawn λ (the paper's reference code for GMix,
            timm's ``correct_lam=False``). The pixels are the same either way.
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
        self.weights = torch.tensor(weights, dtype=torch.float64)
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
        return MixPlan(
            batch, height, width, "batch", partner, None, lam, lam_eff, m, applied,
            tuple(samples), tuple(self.method_names), self.label_weight,
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
        return MixPlan(
            batch, height, width, self.mode, partner, None if self.mode == "batch" else unit,
            lam, lam_eff, method, applied, tuple(samples), tuple(self.method_names),
            self.label_weight,
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
        plan: MixPlan,
        *,
        inplace: bool = False,
        model: nn.Module | None = None,
        labels: Tensor | None = None,
    ) -> Tensor:
        """Mix ``images`` ``[B, C, H, W]`` by ``plan``: ``x̃ = M ⊙ x + (1 − M) ⊙ x[partner]``.

        Any tensor of the plan's batch size and size mixes the same way (e.g. images and their
        segmentation maps). ``inplace=True`` writes into ``images``. ``model`` (and ``labels``)
        are for the methods that need them (PuzzleMix, Manifold Mixup). Records on the plan the
        λ̄ actually applied (for half-precision images and image-dependent methods).
        """
        x = self._check_images(images)
        if not isinstance(plan, MixPlan):
            raise TypeError(f"plan must be a MixPlan from Mixer.sample, got {type(plan).__name__}")
        if (x.shape[0], *x.shape[2:]) != (plan.batch_size, plan.height, plan.width):
            raise ValueError(
                f"images has shape {tuple(x.shape)} but the plan was drawn for batch_size="
                f"{plan.batch_size}, height={plan.height}, width={plan.width}"
            )
        _check_inplace(x, inplace)
        return self._apply(x, plan, inplace, model, labels)

    def _apply(
        self,
        x: Tensor,
        plan: MixPlan,
        inplace: bool,
        model: nn.Module | None,
        labels: Tensor | None,
    ) -> Tensor:
        """:meth:`apply` on checked arguments."""
        if torch.compiler.is_compiling() and not isinstance(plan.unit_method, Tensor):
            out, lam_eff = self._apply_traceable(x, plan, inplace)
        elif not isinstance(plan.unit_method, Tensor):
            out, lam_eff = self._apply_batch(x, plan, inplace)
        else:
            out, lam_eff = self._apply_units(x, plan, inplace, model, labels)
        plan.outcome["lam_effective"] = lam_eff
        return out

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

    def _blend(self, x: Tensor, partner: Tensor, w: Tensor | float, out: Tensor | None) -> Tensor:
        in_place = out is x and x.is_floating_point()
        return blend(x, partner, w, out, self._workspace(x) if in_place else None)

    def _apply_batch(
        self, x: Tensor, plan: MixPlan, inplace: bool
    ) -> tuple[Tensor, Tensor | float]:
        """One mask for the whole batch: nothing to do at ``λ̄ = 1``, a binary box pasted from the
        partner rows (only the box is written), anything else blended."""
        out = x if inplace else None
        sample = plan.samples[plan.unit_method] if plan.unit_applied else None  # type: ignore[index]
        lam_eff: float = plan.unit_lam_effective  # type: ignore[assignment]
        if sample is None:
            return (x.clone() if out is None else out), lam_eff
        wdtype = x.dtype if x.is_floating_point() else torch.float32
        weights: Tensor | None = None
        if wdtype not in (torch.float32, torch.float64):
            # the label must weigh the mask actually applied: its values in the images' dtype
            if sample.constant:
                lam_eff = float(torch.tensor(lam_eff).to(wdtype))
            else:
                weights = sample.masks.to(wdtype)
                lam_eff = float(weights.float().mean())
                plan.outcome["masks"] = weights
        partner = plan.partner
        if sample.constant and lam_eff == 1.0:
            return (x.clone() if out is None else out), lam_eff
        box = _pasted_box(sample)
        if box is not None:
            return paste_box(x, partner, box, out), lam_eff
        if sample.constant:
            w = lam_eff if x.is_floating_point() else torch.tensor(lam_eff).view(1, 1, 1, 1)
            return self._blend(x, partner, w, out), lam_eff
        if sample.binary and _select_exactly(x):
            return select(x, partner, sample.keep(), out, self._workspace(x)), lam_eff
        masks = weights if weights is not None else sample.masks.to(wdtype)
        return self._blend(x, partner, masks, out), lam_eff

    def _apply_traceable(self, x: Tensor, plan: MixPlan, inplace: bool) -> tuple[Tensor, Tensor]:
        """``batch`` mode under ``torch.compile``: tensors only, no Python numbers (a new λ or box
        is new data, not a new graph)."""
        masks, lam_eff = _traceable_tensors(plan)
        wdtype = x.dtype if x.is_floating_point() else torch.float32
        weights = masks.to(device=x.device, dtype=wdtype)
        if wdtype not in (torch.float32, torch.float64):
            lam_eff = weights.float().mean().reshape(1)
        gathered = x.index_select(0, plan.partner)
        if x.is_floating_point():
            mixed = torch.lerp(gathered, x, weights)
        else:
            mixed = to_uint8(torch.lerp(gathered.float(), x.float(), weights))
        out = x.copy_(mixed) if inplace else mixed
        return out, lam_eff.to(x.device)

    def _apply_units(
        self,
        x: Tensor,
        plan: MixPlan,
        inplace: bool,
        model: nn.Module | None,
        labels: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
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
        if wdtype not in (torch.float32, torch.float64) and not lazy_keep:
            # the label must weigh the mask actually applied: its values in the images' dtype
            # (0/1 masks are exact in every dtype)
            if weights_u is None:
                lam_eff_u = lam_eff_u.to(wdtype).float()
            else:
                lam_eff_u = weights_u.float().mean(dim=(1, 2, 3))
                plan.outcome["masks"] = _spread(weights_u, plan)
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
        else:
            out = self._blend(x, plan.partner, _spread(weights_u, plan), out)  # type: ignore[arg-type]
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
        return out, lam_rows

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
                generator=self.generator,
                context={**context, "rows": rows, "partner_rows": partner_rows},
            )
            if not x.is_floating_point():
                mixed = to_uint8(mixed.float())
            lam_rows = lam_rows.to(device=x.device, dtype=torch.float32)
            results.append((rows, mixed.to(x.dtype), lam_rows))
        return results

    # ---- targets ------------------------------------------------------------------------------
    def targets(self, labels: Tensor, plan: MixPlan) -> Tensor:
        """Soft targets ``[B, K]``: ``w ⊙ y + (1 − w) ⊙ y[partner]`` with ``w`` the plan's label
        weight per row (``λ̄``, or the drawn λ under ``label_weight="nominal"``); ``labels`` are
        class indices ``[B]`` or targets ``[B, K]``, smoothed first if ``label_smoothing``."""
        if not isinstance(plan, MixPlan):
            raise TypeError(f"plan must be a MixPlan from Mixer.sample, got {type(plan).__name__}")
        device = plan.partner.device
        onehot = one_hot_targets(
            labels, self.num_classes, plan.batch_size, self.label_smoothing, device
        )
        return mix_targets(onehot, plan.partner, self._label_weight(plan))

    def _label_weight(self, plan: MixPlan) -> Tensor | float:
        if plan.label_weight == "nominal":
            lam = plan.outcome.get("lam_nominal", plan.unit_lam)
            return _spread(lam, plan) if isinstance(lam, Tensor) else lam
        lam_eff = plan.outcome.get("lam_effective")  # per row, or one number
        if lam_eff is None:
            if plan.needs_images:
                raise ValueError(
                    "this plan uses an image-dependent method, whose λ̄ depends on the images: "
                    "call Mixer.apply(images, plan) before Mixer.targets(labels, plan)"
                )
            lam_eff = plan.unit_lam_effective
            if isinstance(lam_eff, Tensor):
                return _spread(lam_eff, plan)
        return lam_eff

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
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, MixPlan]:
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
        if torch.compiler.is_compiling() and self.mode == "batch" and self._all_masks:
            plan = _sample_outside_graph(self, batch, height, width, x.device)
        else:
            plan = self.sample(batch, height, width, device=x.device)
        _check_inplace(x, inplace)
        out = self._apply(x, plan, inplace, model, labels)
        targets = mix_targets(onehot, plan.partner, self._label_weight(plan))
        return (out, targets, plan) if return_info else (out, targets)

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
) -> MixPlan:
    """The draw of a compiled call: run eagerly, its masks and λ made tensors for the graph."""
    plan = mixer.sample(batch, height, width, device=device)
    masks, lam_eff = _traceable_tensors(plan)
    plan.outcome["traceable"] = (masks.contiguous(), lam_eff)
    if plan.label_weight == "nominal":
        plan.outcome["lam_nominal"] = torch.tensor([float(plan.unit_lam)], device=device)
    return plan


def _traceable_tensors(plan: MixPlan) -> tuple[Tensor, Tensor]:
    """``[1, 1, H, W]`` mask and ``[1]`` λ̄ of a ``batch``-mode plan, as tensors."""
    ready = plan.outcome.get("traceable")
    if ready is not None:
        return ready
    masks = unit_masks(plan, torch.float32)
    assert masks is not None
    lam_eff = torch.tensor([float(plan.unit_lam_effective)], device=masks.device)
    return masks, lam_eff


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
