"""The mixing engine: one vectorised :class:`Mixer` for every MSDA method, mode and partner rule.

For a batch ``x`` with labels ``y``, each row ``k`` is mixed with a partner row ``j = partner[k]``:

    x̃_k = M_k ⊙ x_k + (1 − M_k) ⊙ x_j ,      ỹ_k = λ̄_k y_k + (1 − λ̄_k) y_j ,   λ̄_k = mean(M_k)

where ``M_k`` comes from a mask sampler of :mod:`unimix.masks` given ``λ ~ Beta(α, α)``
(Park, Yun & Chun, NeurIPS 2022, section 2). The label weight is the *effective* ratio: the mean
of the mask actually applied, after clipping and rounding, in the images' dtype.

Modes follow timm's ``Mixup``: ``"batch"`` draws one λ and one mask for the whole batch,
``"pair"`` one per pair of rows (each row of a pair gets the same mask), ``"elem"`` one per row.
No mode loops over the batch in Python, and no mode needs an even batch except ``"pair"``.

    >>> mixer = Mixer(["mixup", "cutmix"], alpha=1.0, mode="elem", num_classes=10)
    >>> images, targets = mixer(images, labels)             # doctest: +SKIP
    >>> loss = soft_target_cross_entropy(model(images), targets)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimix import masks as _masks

__all__ = [
    "Mixer",
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


class MixMethod:
    """Extension point for methods whose mix depends on the images or the model.

    Mask methods (Mixup, CutMix, HMix, GMix, …) are :class:`unimix.masks.MaskSampler`\\ s and need
    nothing else. A method that must look at the images (e.g. SaliencyMix) or transform the
    partner (e.g. ResizeMix) subclasses this, registers with :func:`register_method`, and is then
    usable by name in :class:`Mixer` like any other. :meth:`mix` receives the rows it has to mix,
    their partners already gathered, and one λ per row; it returns the mixed rows (a new tensor,
    float32 or the input dtype) and the effective λ of each row: the weight of the row's *own*
    label. ``context`` holds the keyword arguments given to ``Mixer.__call__`` (e.g. ``model=``)
    and ``labels`` (the whole batch's), ``rows`` (the batch indices of the rows given) and
    ``partner_rows`` (their partners' indices).
    """

    name: ClassVar[str] = ""
    #: True when the method needs ``model=`` in the Mixer call (e.g. PuzzleMix's saliency).
    requires_model: ClassVar[bool] = False

    def mix(
        self,
        images: Tensor,
        partners: Tensor,
        lam: Tensor,
        *,
        generator: torch.Generator | None,
        context: Mapping[str, Any],
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


_METHODS: dict[str, Callable[..., MixMethod]] = {}


def register_method(name: str) -> Callable[[type[MixMethod]], type[MixMethod]]:
    """Class decorator: make an image-dependent :class:`MixMethod` usable in :class:`Mixer`."""

    def wrap(cls: type[MixMethod]) -> type[MixMethod]:
        if name in _masks.available() or (name in _METHODS and _METHODS[name] is not cls):
            raise ValueError(f"a mixing method named {name!r} is already registered")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return wrap


def available_methods() -> list[str]:
    """Every method name :class:`Mixer` accepts: mask samplers and image-dependent methods."""
    return sorted({*_masks.available(), *_METHODS})


def _build_method(
    name: str | _masks.MaskSampler | MixMethod, params: Mapping[str, Any]
) -> _masks.MaskSampler | MixMethod:
    if isinstance(name, (_masks.MaskSampler, MixMethod)):
        return name
    if isinstance(name, str) and name in _METHODS:
        return _METHODS[name](**params)
    if isinstance(name, str) and name in _masks.available():
        return _masks.get(name, **params)
    raise ValueError(
        f"unknown mixing method {name!r} in methods; known methods: {', '.join(available_methods())}"
    )


def method_parameters(name: object) -> set[str]:
    """Names of the parameters that the method registered as ``name`` takes (e.g. ``{"r",
    "boundary"}`` for HMix); empty for unknown names and instances."""
    if not isinstance(name, str):
        return set()
    factory = _METHODS.get(name) or _masks._REGISTRY.get(name)
    if factory is None:
        return set()
    return set(inspect.signature(factory).parameters)


@dataclass(frozen=True)
class MixInfo:
    """What a :class:`Mixer` call drew, for analysis (``return_info=True``).

    Attributes:
        lam: ``[B]`` λ drawn for each row (1 where mixing was not applied).
        lam_effective: ``[B]`` weight of the row's own label = mean of the mask applied to it.
        masks: ``[B or 1, 1, H, W]`` weight of the row's own image (``None`` for image-dependent
            methods that are no mask mix).
        partner: ``[B]`` index of the row each row was mixed with.
        method: ``[B]`` index into ``Mixer.method_names`` of the method used for each row.
        applied: ``[B]`` whether mixing was applied to the row (``prob``).
    """

    lam: Tensor
    lam_effective: Tensor
    masks: Tensor | None
    partner: Tensor
    method: Tensor
    applied: Tensor


def one_hot_targets(
    labels: Tensor,
    num_classes: int | None,
    batch_size: int,
    smoothing: float = 0.0,
    device: torch.device | None = None,
) -> Tensor:
    """Soft targets ``[B, K]`` from class indices ``[B]`` or one-hot/soft targets ``[B, K]``.

    Label smoothing as timm defines it: ``y (1 − ε) + ε / K`` (for one-hot ``y``: the true class
    gets ``1 − ε + ε/K``, every other ``ε/K``).
    """
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    device = device or labels.device
    if labels.shape[:1] != (batch_size,):
        raise ValueError(
            f"labels has batch size {labels.shape[0] if labels.dim() else 'none'} but images has "
            f"{batch_size}; pass one label (or one row of targets) per image"
        )
    if labels.dim() == 1:
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise TypeError(
                "class-index labels must be an integer tensor; soft targets must be [B, K]"
            )
        if num_classes is None:
            raise ValueError(
                "num_classes is required when labels are class indices; pass num_classes=K"
            )
        try:  # one_hot checks the range itself; re-raise its error as ours
            targets = F.one_hot(labels.to(device).long(), num_classes).float()
        except RuntimeError:
            raise ValueError(
                f"labels must lie in [0, num_classes={num_classes}), got range "
                f"[{int(labels.min())}, {int(labels.max())}]; check num_classes"
            ) from None
    elif labels.dim() == 2:
        if num_classes is not None and labels.shape[1] != num_classes:
            raise ValueError(f"labels has {labels.shape[1]} columns but num_classes={num_classes}")
        targets = labels.to(device=device, dtype=torch.float32)
    else:
        raise ValueError(
            f"labels must be [B] class indices or [B, K] targets, got shape {tuple(labels.shape)}"
        )
    if smoothing:
        targets = targets * (1.0 - smoothing) + smoothing / targets.shape[1]
    return targets


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
        **method_params: parameters routed to every method that takes them (e.g. ``r=0.5`` for
            HMix, ``boundary="wrap"``).

    Call ``mixer(images, labels)`` → ``(mixed images, soft targets [B, K])``.
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
            n if isinstance(n, str) else m.name for n, m in zip(names, self.methods, strict=False)
        ]
        self.weights = torch.tensor(weights, dtype=torch.float64)
        if isinstance(alpha, Mapping):
            unknown = set(alpha) - set(self.method_names)
            if unknown:
                raise ValueError(f"alpha names methods not in methods: {sorted(unknown)}")
            self.alphas = [
                _masks.check_alpha(f"alpha[{n!r}]", alpha.get(n, 1.0)) for n in self.method_names
            ]
        else:
            self.alphas = [_masks.check_alpha("alpha", alpha)] * len(self.methods)
        if mode not in ("batch", "pair", "elem"):
            raise ValueError(f"mode must be 'batch', 'pair' or 'elem', got {mode!r}")
        if partner not in ("flip", "random"):
            raise ValueError(f"partner must be 'flip' or 'random', got {partner!r}")
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
        ):
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.mode: Mode = mode
        self.prob = _masks.check_unit("prob", prob)
        self.label_smoothing = _masks.check_unit("label_smoothing", label_smoothing)
        self.num_classes = num_classes
        self.partner: Partner = partner
        self.generator = generator
        self._requires_model = any(getattr(m, "requires_model", False) for m in self.methods)
        self._all_masks = all(isinstance(m, _masks.MaskSampler) for m in self.methods)
        self._cumulative = (self.weights / self.weights.sum()).cumsum(0).tolist()
        self._flip_cache: dict[tuple[int, torch.device], Tensor] = {}
        self._workspace: Tensor | None = None

    @staticmethod
    def _parse_methods(methods: object, switch_prob: float | None) -> tuple[list[Any], list[float]]:
        if isinstance(methods, (str, _masks.MaskSampler, MixMethod)):
            names, weights = [methods], [1.0]
        elif isinstance(methods, Mapping):
            names, weights = list(methods), [float(w) for w in methods.values()]
            if any(not w >= 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(
                    f"method weights must be >= 0 with a positive sum, got {dict(methods)}"
                )
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
            switch_prob = _masks.check_unit("switch_prob", switch_prob)
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
        methods = dict(
            zip(
                self.method_names,
                (float(w) for w in self.weights / self.weights.sum()),
                strict=False,
            )
        )
        return (
            f"Mixer(methods={methods}, alpha={self.alphas}, mode={self.mode!r}, prob={self.prob}, "
            f"label_smoothing={self.label_smoothing}, num_classes={self.num_classes}, partner={self.partner!r})"
        )

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The generator's state (``None`` when the global RNG is used), for checkpoints."""
        return {"generator": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("generator") is not None:
            if self.generator is None:
                raise ValueError("the state has a generator state but this Mixer has no generator")
            self.generator.set_state(state["generator"])

    # ---- drawing ------------------------------------------------------------------------------
    def _rand_device(self) -> torch.device:
        return self.generator.device if self.generator is not None else torch.device("cpu")

    def _flip(self, batch: int, device: torch.device) -> Tensor:
        key = (batch, device)
        if key not in self._flip_cache:
            self._flip_cache = {key: torch.arange(batch - 1, -1, -1, device=device)}
        return self._flip_cache[key]

    def _draw_partner(self, batch: int) -> Tensor:
        dev = self._rand_device()
        if self.partner == "flip":
            return self._flip(batch, dev)
        perm = torch.randperm(batch, generator=self.generator, device=dev)
        if self.mode != "pair":
            return perm
        partner = torch.empty_like(perm)
        partner[perm[0::2]] = perm[1::2]
        partner[perm[1::2]] = perm[0::2]
        return partner

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
        self, n: int, height: int, width: int, device: torch.device
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
        # λ comes from Beta(α, α) on the generator's device: samplers need not re-validate it
        if len(self.methods) == 1 and self.prob == 1.0:
            lam = _masks.sample_lambda(self.alphas[0], n, g, dev)
            method_obj = self.methods[0]
            if isinstance(method_obj, _masks.MaskSampler):
                return lam, method, applied, [method_obj._sample(lam, height, width, device, g)]
            return lam, method, applied, [None]
        lam = torch.ones(n, device=dev)
        samples: list[_masks.MaskSample | None] = []
        for m, (method_obj, alpha) in enumerate(zip(self.methods, self.alphas, strict=False)):
            sel = (method == m) & applied
            count = int(sel.sum())
            sample = None
            if count:
                lam[sel] = _masks.sample_lambda(alpha, count, g, dev)
                if isinstance(method_obj, _masks.MaskSampler):
                    sample = method_obj._sample(lam[sel], height, width, device, g)
            samples.append(sample)
        return lam, method, applied, samples

    # ---- mixing -------------------------------------------------------------------------------
    def __call__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        inplace: bool = False,
        return_info: bool = False,
        **context: Any,
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, MixInfo]:
        x = self._check_images(images)
        batch, _, height, width = x.shape
        device = x.device
        targets = one_hot_targets(labels, self.num_classes, batch, self.label_smoothing, device)
        if batch == 0:
            raise ValueError("images is an empty batch")
        if self.mode == "pair" and batch % 2:
            raise ValueError(
                f"mode='pair' needs an even batch, got {batch}; use mode='elem' or drop_last=True"
            )

        if self.mode == "batch" and self._all_masks:
            return self._call_batch(x, targets, inplace, return_info)

        rows = torch.arange(batch, device=device)
        partner = self._draw_partner(batch).to(device) if batch > 1 else rows
        unit = self._unit_of_row(batch, partner)
        n_units = {"batch": 1, "pair": batch // 2, "elem": batch}[self.mode] if batch > 1 else 1
        if batch > 1:
            lam_u, method_u, applied_u, samples = self._draw_units(n_units, height, width, device)
        else:  # a single image has no partner: returned unmixed with its own target
            lam_u = torch.ones(1)
            method_u = torch.zeros(1, dtype=torch.long)
            applied_u = torch.zeros(1, dtype=torch.bool)
            samples = [None] * len(self.methods)
        lam_u, method_u, applied_u = (t.to(device) for t in (lam_u, method_u, applied_u))

        out = x if inplace else None
        weights_u, lam_eff, out = self._mix(
            x, labels, partner, unit, lam_u, method_u, applied_u, samples, out, context
        )
        lam_col = lam_eff[:, None]
        mixed_targets = (
            targets.index_select(0, partner).mul_(1.0 - lam_col).addcmul_(targets, lam_col)
        )
        if not return_info:
            return out, mixed_targets
        masks = None
        if weights_u is not None:
            masks = weights_u() if self.mode == "batch" else weights_u()[unit]
        info = MixInfo(
            lam=lam_u[unit],
            lam_effective=lam_eff,
            masks=masks,
            partner=partner,
            method=method_u[unit],
            applied=applied_u[unit],
        )
        return out, mixed_targets, info

    def _call_batch(
        self, x: Tensor, targets: Tensor, inplace: bool, return_info: bool
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, MixInfo]:
        """``batch`` mode with mask methods: one λ, one mask, drawn as Python numbers."""
        batch, _, height, width = x.shape
        device, g = x.device, self.generator
        applied, m = batch > 1, 0
        if applied and (self.prob < 1.0 or len(self.methods) > 1):
            u_apply, u_method = torch.rand(2, generator=g, device=self._rand_device()).tolist()
            applied = u_apply < self.prob
            m = next(
                (i for i, c in enumerate(self._cumulative) if u_method < c), len(self.methods) - 1
            )
        partner = (
            self._flip(batch, device)
            if self.partner == "flip" or batch == 1
            else (self._draw_partner(batch).to(device))
        )
        sample: _masks.MaskSample | None = None
        lam = lam_eff = 1.0
        if applied:
            lam = _masks.sample_lambda_one(self.alphas[m], g)
            sample = self.methods[m].sample_one(lam, height, width, device, g)
            lam_eff = float(sample.lam[0])
        wdtype = x.dtype if x.is_floating_point() else torch.float32
        weights: Tensor | None = None
        if sample is not None and wdtype not in (torch.float32, torch.float64):
            # the label must weigh the mask actually applied: its values in the images' dtype
            if sample.constant:
                lam_eff = float(torch.tensor(lam_eff).to(wdtype))
            else:
                weights = sample.masks.to(wdtype)
                lam_eff = float(weights.float().mean())

        out = x if inplace else None
        if sample is None:
            out = x.clone() if out is None else out
        else:

            def cast_masks() -> Tensor:
                return weights if weights is not None else sample.masks.to(wdtype)

            box = _pasted_box(sample.boxes, sample.outside)
            out = self._mix_batch(x, partner, cast_masks, lam_eff, sample.constant, box, out)

        mixed = targets.index_select(0, partner).mul_(1.0 - lam_eff).add_(targets, alpha=lam_eff)
        if not return_info:
            return out, mixed
        if sample is None:
            masks = torch.ones(1, 1, height, width, device=device)
        else:
            masks = weights if weights is not None else sample.masks
        info = MixInfo(
            lam=torch.full((batch,), lam, device=device),
            lam_effective=torch.full((batch,), lam_eff, device=device),
            masks=masks,
            partner=partner,
            method=torch.full((batch,), m, dtype=torch.long, device=device),
            applied=torch.full((batch,), applied, dtype=torch.bool, device=device),
        )
        return out, mixed, info

    def _blend(self, x: Tensor, partner: Tensor, w: Tensor | float, out: Tensor | None) -> Tensor:
        """``_blend`` with a reusable gather buffer when mixing in place (no fresh allocation)."""
        if out is not x or not x.is_floating_point():
            return _blend(x, partner, w, out)
        ws = self._workspace
        if (
            ws is None
            or ws.shape != x.shape
            or ws.dtype != x.dtype
            or ws.device != x.device
            or (ws.stride() != x.stride())
        ):
            ws = self._workspace = torch.empty_like(x)
        torch.index_select(x, 0, partner, out=ws)
        return torch.lerp(ws, x, w, out=x)

    @staticmethod
    def _check_images(images: Tensor) -> Tensor:
        if not isinstance(images, Tensor):
            raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(f"images must be 4-D [B, C, H, W], got shape {tuple(images.shape)}")
        if not (images.is_floating_point() or images.dtype == torch.uint8):
            raise TypeError(f"images must be a floating-point or uint8 tensor, got {images.dtype}")
        return images

    def _mix(
        self,
        x: Tensor,
        labels: Tensor,
        partner: Tensor,
        unit: Tensor,
        lam_u: Tensor,
        method_u: Tensor,
        applied_u: Tensor,
        samples: list[_masks.MaskSample | None],
        out: Tensor | None,
        context: Mapping[str, Any],
    ) -> tuple[Callable[[], Tensor] | None, Tensor, Tensor]:
        """Mix ``x`` into ``out`` (``None``: a new tensor); returns a function giving the per-unit
        weights (``None`` when an image-dependent method was used), the per-row λ̄, and ``out``."""
        n_units = lam_u.shape[0]
        _, _, height, width = x.shape
        device = x.device
        wdtype = x.dtype if x.is_floating_point() else torch.float32
        present = [m for m, s in enumerate(samples) if s is not None]
        image_units = None
        if not self._all_masks:
            image_units = torch.zeros(n_units, dtype=torch.bool, device=device)
            for m, obj in enumerate(self.methods):
                if isinstance(obj, MixMethod):
                    image_units |= (method_u == m) & applied_u

        # Image-dependent methods read the original rows, so they run before any in-place mix.
        image_results: list[tuple[Tensor, Tensor, Tensor]] = []
        if image_units is not None and bool(image_units.any()):
            image_rows = image_units[unit].nonzero().squeeze(1)
            for m, obj in enumerate(self.methods):
                if not isinstance(obj, MixMethod):
                    continue
                sel = image_rows[method_u[unit[image_rows]] == m]
                if sel.numel() == 0:
                    continue
                partner_rows = partner[sel]
                ctx = {**context, "labels": labels, "rows": sel, "partner_rows": partner_rows}
                mixed, lam_rows = obj.mix(
                    x.index_select(0, sel),
                    x.index_select(0, partner_rows),
                    lam_u[unit[sel]],
                    generator=self.generator,
                    context=ctx,
                )
                if not x.is_floating_point():
                    mixed = _to_uint8(mixed.float())
                image_results.append(
                    (sel, mixed.to(x.dtype), lam_rows.to(device=device, dtype=torch.float32))
                )

        # Per-unit weights of the row's own image and their exact means.
        only = samples[present[0]] if len(present) == 1 else None
        weights_u: Tensor | None
        if only is not None and only.lam.shape[0] == n_units:
            weights_u, lam_eff_u = None, only.lam.to(device)  # masks made only when needed
            constant, boxes, outside = only.constant, only.boxes, only.outside
        else:
            only = None
            lam_eff_u = torch.ones(n_units, device=device)
            constant = all(samples[m].constant for m in present)  # type: ignore[union-attr]
            weights_u = None if constant else torch.ones(n_units, 1, height, width, device=device)
            for m in present:
                sample = samples[m]
                assert sample is not None
                sel = ((method_u == m) & applied_u).nonzero().squeeze(1)
                lam_eff_u[sel] = sample.lam.to(device)
                if weights_u is not None:
                    weights_u[sel] = sample.masks
            if weights_u is None:
                weights_u = lam_eff_u.view(-1, 1, 1, 1).expand(-1, 1, height, width)
            boxes = outside = None

        def weights() -> Tensor:
            """The per-unit masks in the images' dtype, made on first use."""
            nonlocal weights_u
            if weights_u is None:
                assert only is not None
                weights_u = only.masks
            if weights_u.dtype != wdtype:
                weights_u = weights_u.to(wdtype)
            return weights_u

        if wdtype not in (torch.float32, torch.float64):
            # the label must weigh the mask actually applied: its values in the images' dtype
            lam_eff_u = (
                lam_eff_u.to(wdtype).float() if constant else weights().float().mean(dim=(1, 2, 3))
            )

        if self.mode == "batch":
            box = _pasted_box(boxes, outside)
            out = self._mix_batch(x, partner, weights, float(lam_eff_u[0]), constant, box, out)
        elif constant and all(isinstance(self.methods[m], _masks.NoMix) for m in present):
            out = x.clone() if out is None else out
        elif constant:
            out = self._blend(
                x, partner, _rows(lam_eff_u.to(wdtype).view(-1, 1, 1, 1), unit, self.mode), out
            )
        else:
            # lerp with 0/1 weights copies exactly, so binary masks need no separate select
            out = self._blend(x, partner, _rows(weights(), unit, self.mode), out)

        lam_eff = (
            lam_eff_u.expand(x.shape[0])
            if self.mode == "batch"
            else _rows(lam_eff_u, unit, self.mode)
        )
        if image_results:
            lam_eff = lam_eff.clone()
            for sel, mixed, lam_rows in image_results:
                out[sel] = mixed
                lam_eff[sel] = lam_rows
            return None, lam_eff, out
        return weights, lam_eff, out

    def _mix_batch(
        self,
        x: Tensor,
        partner: Tensor,
        weights: Callable[[], Tensor],
        lam_eff: float,
        constant: bool,
        box: tuple[int, int, int, int] | None,
        out: Tensor | None,
    ) -> Tensor:
        """One mask for the whole batch: nothing to do at ``λ̄ = 1``, a binary box pasted from the
        partner rows (only the box is written), anything else blended."""
        if constant and lam_eff == 1.0:
            return x.clone() if out is None else out
        if box is not None:
            y0, y1, x0, x1 = box
            out = x.clone() if out is None else out
            out[:, :, y0:y1, x0:x1] = x[:, :, y0:y1, x0:x1].index_select(0, partner)
            return out
        if constant:
            w = lam_eff if x.is_floating_point() else torch.tensor(lam_eff).view(1, 1, 1, 1)
            return self._blend(x, partner, w, out)
        return self._blend(x, partner, weights(), out)


def _pasted_box(boxes: Tensor | None, outside: Tensor | None) -> tuple[int, int, int, int] | None:
    """The first mask's box when it is a CutMix-style binary box (1 outside), else ``None``."""
    if boxes is None or outside is None or float(outside[0]) != 1.0:
        return None
    y0, y1, x0, x1 = boxes[0].tolist()
    return y0, y1, x0, x1


def _rows(per_unit: Tensor, unit: Tensor, mode: str) -> Tensor:
    """Per-unit values spread to the rows (``elem``: one unit per row already)."""
    return per_unit if mode == "elem" else per_unit.index_select(0, unit)


def _blend(x: Tensor, partner: Tensor, w: Tensor | float, out: Tensor | None) -> Tensor:
    """``out = w ⊙ x + (1 − w) ⊙ x[partner]`` without touching ``x`` unless ``out is x``."""
    gathered = x.index_select(0, partner)
    if not x.is_floating_point():
        mixed = gathered.float().lerp_(x.float(), w if isinstance(w, float) else w.float())
        mixed = _to_uint8(mixed)
        if out is None:
            return mixed.contiguous(memory_format=_memory_format(x))
        return out.copy_(mixed)
    if out is x:  # Mixer._blend gathers into a reusable buffer instead
        return torch.lerp(gathered, x, w, out=x)
    if out is None:
        if not gathered.is_contiguous(memory_format=_memory_format(x)):
            gathered = gathered.contiguous(memory_format=_memory_format(x))
        return gathered.lerp_(x, w)
    return out.copy_(gathered.lerp_(x, w))


def _to_uint8(values: Tensor) -> Tensor:
    """Round float pixel values in [0, 255] to uint8 (through int16: PyTorch's direct
    float → uint8 cast is several times slower on CPU)."""
    return values.round_().clamp_(0, 255).to(torch.int16).to(torch.uint8)


def _memory_format(x: Tensor) -> torch.memory_format:
    if (
        x.dim() == 4
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()
    ):
        return torch.channels_last
    return torch.contiguous_format


def soft_target_cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy with soft targets: ``−Σ_k ỹ_k log softmax(z)_k``, averaged over the batch."""
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape"
        )
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # a softmax in half precision loses the small probabilities
    loss = -(targets.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(dim=-1)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class SoftTargetCrossEntropy(nn.Module):
    """Module form of :func:`soft_target_cross_entropy`, for the targets a :class:`Mixer` returns."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return soft_target_cross_entropy(logits, targets, self.reduction)
