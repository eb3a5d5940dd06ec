"""``SSL``: the SS1 drop-in replacement for ``nn.Linear``."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable

import torch
from torch import nn

from .ops import records_autograd, rotate_weight, ss1_linear
from .structure import (
    DEFAULT_BLOCK_N,
    MAX_BLOCK_K,
    MAX_BLOCK_N,
    MAX_SEED,
    MIN_BLOCK,
    SS1Structure,
    default_block_k,
    reduced_width,
    validate_block,
    validate_reduction_factor,
)

logger = logging.getLogger(__name__)

#: Buffer names under which the structure is saved in the state dict.
_STRUCTURE_KEYS = ("redn_factor", "seed", "block_k", "block_n")
#: Saved too, and checked on load when present; checkpoints made before they were saved load
#: without them (never reported as missing keys).
_SHAPE_KEYS = ("in_features", "out_features")

#: A function ``(in_features, out_features, redn_factor, dtype, device) -> (block_k, block_n) | None``
#: that recommends a structure; it returns None for "no opinion". Without one installed, new layers
#: ask the tuning database (``ss1bench.tuning.lookup.DATABASE.structure``, imported on first use).
StructureAdvisor = Callable[[int, int, int, torch.dtype, torch.device], "tuple[int, int] | None"]
_structure_advisor: StructureAdvisor | None = None


def set_structure_advisor(advisor: StructureAdvisor | None) -> StructureAdvisor | None:
    """Install the function new layers ask for (block_k, block_n) when none are given (None: the
    tuning database). Returns the advisor it replaces, so a caller can put it back.
    """
    global _structure_advisor
    previous, _structure_advisor = _structure_advisor, advisor
    return previous


def choose_structure(in_features: int, out_features: int, redn_factor: int, seed: int,
                     block_k: int | None, block_n: int | None, dtype: torch.dtype | None,
                     device: torch.device | str | None) -> SS1Structure:
    """Structure for a new layer: explicit block sizes, else the advisor's, else the defaults.

    An advised ``block_k`` that :func:`check_compression` would refuse (a database recommending one
    block_k for every shape, a hand-edited file) gives way to the default, with a warning; an
    invalid advised ``block_n`` likewise.

    Defaults: ``block_k`` from :func:`~ss1bench.structure.default_block_k` (least padding),
    ``block_n = 128``. Every argument is checked (type and range) before any arithmetic: a bad one
    raises TypeError or ValueError naming it.
    """
    _check_arguments(in_features, out_features, redn_factor, seed, block_k, block_n)
    if block_k is None or block_n is None:
        advisor = _structure_advisor
        if advisor is None:
            from .tuning.lookup import DATABASE

            advisor = DATABASE.structure
        advice = advisor(
            in_features, out_features, redn_factor,
            dtype or torch.get_default_dtype(),
            # Where the layer's tensors will live: honours `with torch.device("cuda"):`.
            torch.device(device) if device is not None else torch.get_default_device(),
        )
        if advice is not None:
            # A recommendation never makes a layer fail: an advised block_k (then block_n) that
            # would be refused gives way to the default (as convert_to_ss_linear's fallback does).
            default_k = default_block_k(in_features, redn_factor)
            tries = [(advice[0] if block_k is None else block_k, advice[1] if block_n is None else block_n)]
            if block_k is None:
                tries.append((default_k, tries[0][1]))
            for advised in tries:
                problem = _advice_problem(in_features, out_features, redn_factor, seed, *advised)
                if problem is None:
                    block_k, block_n = advised
                    break
                logger.warning("ignoring the advised block_k=%s, block_n=%s for this layer: %s", *advised, problem)
        if block_k is None:
            block_k = default_block_k(in_features, redn_factor)
        if block_n is None:
            block_n = DEFAULT_BLOCK_N
    return SS1Structure(in_features, out_features, redn_factor, seed, block_k, block_n)


def _advice_problem(in_features, out_features, redn_factor, seed, block_k, block_n) -> str | None:
    """Why an advised structure cannot be used (invalid, or refused by :func:`check_compression`)."""
    try:
        return compression_problem(SS1Structure(in_features, out_features, redn_factor, seed, block_k, block_n))
    except (TypeError, ValueError) as exc:
        return str(exc)


def _check_arguments(in_features, out_features, redn_factor, seed, block_k, block_n) -> None:
    """The checks of :class:`SS1Structure`, run before the defaults do arithmetic on the values
    (``redn_factor=0`` would divide by zero there, ``"4"`` fail inside an expression)."""
    for name, value in (("in_features", in_features), ("out_features", out_features)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    validate_reduction_factor(redn_factor)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} ({seed!r})")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an int in [0, 2**63 - 1] (it is saved as int64), got {seed}")
    if block_k is not None:
        validate_block("block_k", block_k, MAX_BLOCK_K)
    if block_n is not None:
        validate_block("block_n", block_n, MAX_BLOCK_N)


def _largest_fitting_block_k(in_features: int, redn_factor: int) -> int | None:
    """The largest block_k whose compressed weight is narrower than the dense one, else the largest
    that is as wide, else None (in_features too small for redn_factor)."""
    widths = {block_k: reduced_width(in_features, redn_factor, block_k)
              for block_k in (MIN_BLOCK << shift for shift in range(11))}
    narrower = [block_k for block_k, width in widths.items() if width < in_features]
    as_wide = [block_k for block_k, width in widths.items() if width == in_features]
    return max(narrower or as_wide, default=None)


def compression_problem(structure: SS1Structure) -> str | None:
    """Why :func:`check_compression` refuses ``structure``, or None."""
    s = structure
    dense, stored = s.in_features, s.k_red
    where = f"SSL({s.in_features}, {s.out_features}, redn_factor={s.redn_factor}, block_k={s.block_k})"
    if s.redn_factor == 1:
        needed = math.ceil(s.in_features / MIN_BLOCK) * MIN_BLOCK
        if s.block_k > needed:
            return (f"{where}: block_k={s.block_k} is wider than in_features={s.in_features} needs, so the weight "
                    f"({s.out_features} x {stored}) is {stored / dense:.2f}x the dense one (compression "
                    f"{s.compression:.2f}x); pass a smaller block_k (at most {needed}) or leave block_k out")
        return None
    if stored > dense:
        fitting = _largest_fitting_block_k(s.in_features, s.redn_factor)
        advice = (f"pass a smaller block_k (at most {fitting}) or leave block_k out" if fitting is not None else
                  f"in_features={s.in_features} is too small for redn_factor={s.redn_factor} (the smallest "
                  f"compressed width is {MIN_BLOCK}); use a smaller redn_factor or nn.Linear")
        return (f"{where}: the compressed weight ({s.out_features} x {stored}) would be larger than the dense one "
                f"({s.out_features} x {dense}), compression {s.compression:.2f}x; {advice}")
    return None


def check_compression(structure: SS1Structure) -> None:
    """Refuse a structure whose compressed weight is larger than the dense weight; warn when a
    reduction factor above 1 saves nothing.

    - ``redn_factor > 1`` and ``K_red > in_features`` (compression below 1x, e.g. ``SSL(64, 64,
      redn_factor=2, block_k=1024)``: 1024 columns for 64 inputs): ValueError.
    - ``redn_factor > 1`` and ``K_red == in_features`` (compression exactly 1x): a ``UserWarning``;
      the layer is valid but stores as many weights as ``nn.Linear``.
    - ``redn_factor == 1`` asks for no compression: ``K_red`` is ``in_features`` rounded up to
      ``block_k``, padding included. Refused only when ``block_k`` is wider than ``in_features``
      rounded up to a multiple of 16 (one block larger than the whole input needs).
    """
    problem = compression_problem(structure)
    if problem is not None:
        raise ValueError(problem)
    s = structure
    if s.redn_factor > 1 and s.k_red == s.in_features:
        warnings.warn(
            f"SSL({s.in_features}, {s.out_features}, redn_factor={s.redn_factor}, block_k={s.block_k}): compression "
            f"is 1.00x (the compressed weight is as wide as the dense one, {s.k_red} columns): this layer saves "
            "no weights or FLOPs over nn.Linear", UserWarning, stacklevel=3)


class SSL(nn.Module):
    """Sketch Structured Linear layer: ``y = x @ W.T + b`` with ``W`` an SS1 matrix.

    Stores a compressed weight of shape ``(out_features, K_red)``, ``K_red ~ in_features /
    redn_factor``. The structure (``redn_factor``, ``seed``, ``block_k``, ``block_n``) defines the
    function and is saved in the state dict; kernel launch settings never change it.

    Args:
        in_features: size of each input sample (K).
        out_features: size of each output sample (N).
        bias: learn an additive bias.
        redn_factor: reduction factor c, a power of two in 1..32.
        seed: seeds the hash (a private generator; the global RNG is untouched).
        block_k, block_n: structural block sizes (powers of two >= 16). When omitted they come
            from the tuning database for this GPU, dtype and shape, else from the defaults.

    Raises:
        TypeError, ValueError: an argument of the wrong type or out of range (named in the message),
            checked before anything is computed from it.
        ValueError: a structure whose compressed weight would be larger than the dense weight
            (compression below 1x, e.g. ``SSL(64, 64, redn_factor=2, block_k=1024)``). With
            ``redn_factor > 1`` a compression of exactly 1x is allowed with a ``UserWarning`` (the
            layer saves nothing). ``redn_factor=1`` means no compression: ``K_red`` is
            ``in_features`` rounded up to ``block_k``, refused only when ``block_k`` is wider than
            ``in_features`` rounded up to 16. See :func:`check_compression`.

    Checkpoints: the state dict holds the structure (``redn_factor``, ``seed``, ``block_k``,
    ``block_n``) and the shape (``in_features``, ``out_features``) as int64 buffers. Loading checks
    them against the layer (a different ``redn_factor``, ``seed``, ``in_features`` or
    ``out_features`` is an error naming both values) and adopts the checkpoint's block sizes, with
    a warning on the ``ss1bench.layer`` logger. A load is all or nothing: when it fails, the layer
    keeps its block sizes and weights. Checkpoints saved before the shape was saved still load.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, redn_factor: int = 2,
                 seed: int = 1024, device=None, dtype=None, block_k: int | None = None,
                 block_n: int | None = None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.structure = choose_structure(in_features, out_features, redn_factor, seed, block_k,
                                          block_n, dtype, device)
        check_compression(self.structure)
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(self.structure.weight_shape, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self._rotated_cache_on = False
        self._forget_rotated_weight()
        self.reset_parameters()

    # ---- structure properties -------------------------------------------------------------------
    @property
    def redn_factor(self) -> int:
        return self.structure.redn_factor

    @property
    def seed(self) -> int:
        return self.structure.seed

    @property
    def block_k(self) -> int:
        return self.structure.block_k

    @property
    def block_n(self) -> int:
        return self.structure.block_n

    @property
    def compression(self) -> float:
        return self.structure.compression

    # ---- init -----------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """Give the equivalent dense layer ``nn.Linear``'s default distribution.

        ``nn.Linear`` draws ``W ~ U(-1/sqrt(K), 1/sqrt(K))`` (kaiming-uniform with a = sqrt(5));
        every dense entry is one compressed entry, so drawing ``Wc`` from the same law gives the
        dense weight exactly that marginal law. The bias follows ``nn.Linear`` too.
        """
        bound = 1.0 / math.sqrt(self.in_features)
        if self.weight.device.type == "meta":
            return
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    # ---- compute --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        device_type = x.device.type
        # Like nn.Linear under autocast: lower-precision compute for float32 inputs; float64 stays.
        # ss1_linear makes the casts (eager training folds them into the sketch pass).
        # Meta tensors (shape inference) have no autocast state: asking raises.
        dtype = None
        if device_type != "meta" and torch.is_autocast_enabled(device_type) and x.dtype != torch.float64:
            dtype = torch.get_autocast_dtype(device_type)
        rotated = None
        if (self._rotated_cache_on and dtype in (None, weight.dtype)
                and not records_autograd(x, weight, bias)):
            rotated = self._rotated_weight()
        return ss1_linear(x, weight, bias, self.structure, rotated, dtype=dtype)

    # ---- rotated-weight cache -------------------------------------------------------------------
    def cache_rotated_weight(self, enabled: bool = True) -> SSL:
        """Keep a rotated copy of the weight for the forward pass (off by default; returns self).

        The forward multiplies the input's sketch by the weight with each row rotated by its N
        block's shift. The ``sketch_gemm`` kernel path (cuBLAS on the sketch) rotates the whole
        weight on every call to do that, which at decode sizes can cost as much as the product
        itself. With the cache on, the layer keeps that rotated copy and the forward uses it
        (launch configs tuned for this case, kind ``forward_rotated``, when the database has them).

        Costs one more ``(out_features, K_red)`` tensor of the weight's dtype (1/c of the dense
        weight). The copy is rebuilt on the next forward after the weight changes through torch
        operations (optimizer steps, ``load_state_dict``, ``copy_``: the version counter moves) or
        gets new storage (``.to()``, ``.half()``, ``weight.data = ...``). In-place edits through
        ``weight.data`` are not tracked by torch: call :meth:`refresh_rotated_weight` after them.
        CUDA graphs captured while the cache is valid replay with the copy they captured: after
        changing the weight, run one eager forward (or :meth:`refresh_rotated_weight`) and
        re-capture. ``torch.compile`` traces and autocast-converted weights do not use the cache.
        """
        self._rotated_cache_on = bool(enabled)
        self._forget_rotated_weight()
        return self

    @property
    def caches_rotated_weight(self) -> bool:
        """Whether :meth:`cache_rotated_weight` is on."""
        return self._rotated_cache_on

    def refresh_rotated_weight(self) -> None:
        """Rebuild the rotated copy now (no-op while the cache is off)."""
        self._forget_rotated_weight()
        if self._rotated_cache_on:
            self._rotated_weight()

    def _forget_rotated_weight(self) -> None:
        self._rotated: torch.Tensor | None = None
        self._rotated_key: tuple | None = None

    def _rotated_weight(self) -> torch.Tensor | None:
        """The cached rotated weight, rebuilt if the weight changed; None where it cannot be used."""
        if torch.compiler.is_compiling():
            return None
        weight = self.weight
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, self.structure.key)
        if key == self._rotated_key:
            return self._rotated
        if weight.is_cuda and torch.cuda.is_current_stream_capturing():
            return None  # a copy made now would hold data only once the graph replays
        with torch.inference_mode(False):
            self._rotated = rotate_weight(weight.detach(), self.structure)
        self._rotated_key = key
        return self._rotated

    def __setstate__(self, state):  # modules pickled before the cache existed
        state.setdefault("_rotated_cache_on", False)
        state.setdefault("_rotated", None)
        state.setdefault("_rotated_key", None)
        super().__setstate__(state)

    def _apply(self, fn, recurse=True):
        self._forget_rotated_weight()  # .to(), .half(), .cuda(): the copy would be stale
        return super()._apply(fn, recurse)

    def dense_weight(self) -> torch.Tensor:
        """The equivalent dense weight ``(out_features, in_features)`` (differentiable)."""
        return self.structure.dense_weight(self.weight)

    @classmethod
    def from_linear(cls, linear: nn.Linear, redn_factor: int, seed: int = 1024,
                    block_k: int | None = None, block_n: int | None = None) -> SSL:
        """SS1 layer closest (least squares) to ``linear``; the bias is copied."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_linear expects an nn.Linear, got {type(linear).__name__}")
        return cls.from_dense(linear.weight, linear.bias, redn_factor, seed, block_k, block_n)

    @classmethod
    def from_dense(cls, weight: torch.Tensor, bias: torch.Tensor | None, redn_factor: int,
                   seed: int = 1024, block_k: int | None = None, block_n: int | None = None) -> SSL:
        """SS1 layer whose dense weight is the projection of ``weight: (out, in)``."""
        out_features, in_features = weight.shape
        layer = cls(in_features, out_features, bias=bias is not None, redn_factor=redn_factor, seed=seed,
                    device=weight.device, dtype=weight.dtype, block_k=block_k, block_n=block_n)
        with torch.no_grad():
            layer.weight.copy_(layer.structure.project(weight.detach()))
            if bias is not None:
                layer.bias.copy_(bias.detach())
        return layer

    # ---- state dict -----------------------------------------------------------------------------
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        for key in _STRUCTURE_KEYS:
            destination[prefix + key] = torch.tensor(getattr(self.structure, key), dtype=torch.int64)
        for key in _SHAPE_KEYS:
            destination[prefix + key] = torch.tensor(getattr(self, key), dtype=torch.int64)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Check everything the checkpoint says about this layer before changing anything.

        A load this layer refuses (another redn_factor, seed, in_features or out_features; a weight
        or bias of the wrong shape; new block sizes without a weight) leaves it exactly as it was.
        Missing and unexpected keys fail only a strict load, and torch applies ``strict`` after
        every module has loaded (``strict`` here is always True): as for any torch module, the
        layer then holds what the checkpoint had (a consistent structure and weight).
        """
        name = prefix.rstrip(".") or "SSL"
        saved = {}
        for key in (*_STRUCTURE_KEYS, *_SHAPE_KEYS):
            full = prefix + key
            if full in state_dict:
                saved[key] = int(state_dict.pop(full))
            elif strict and key in _STRUCTURE_KEYS:
                missing_keys.append(full)
        current = {"redn_factor": self.redn_factor, "seed": self.seed, "in_features": self.in_features,
                   "out_features": self.out_features}
        for key, value in current.items():
            if key in saved and saved[key] != value:
                error_msgs.append(f"{name}: checkpoint has {key}={saved[key]} but this layer has {key}={value}; "
                                  f"build the layer with the checkpoint's {key}")
                return
        new_blocks = (saved.get("block_k", self.block_k), saved.get("block_n", self.block_n))
        structure = self.structure
        if new_blocks != (self.block_k, self.block_n):
            try:
                structure = SS1Structure(self.in_features, self.out_features, self.redn_factor, self.seed,
                                         *new_blocks)
            except (TypeError, ValueError) as exc:
                error_msgs.append(f"{name}: checkpoint has an invalid structure: {exc}")
                return
        problems = self._state_problems(state_dict, prefix, structure)
        if problems:  # the load fails: report it and change nothing
            error_msgs.extend(f"{name}: {problem}" for problem in problems)
            return
        previous = None
        if structure is not self.structure:
            previous = (self.structure, self.weight.data)
            self.structure = structure
            # The same Parameter object with new storage: an optimizer built before the load keeps
            # updating this layer's weight (its per-parameter state, if any, must come from the
            # same checkpoint: it has the checkpoint's shapes).
            self.weight.data = self.weight.new_empty(structure.weight_shape)
            self._forget_rotated_weight()
        errors_before = len(error_msgs)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if previous is None:
            return
        if len(error_msgs) > errors_before:
            # A failure the checks above did not foresee: put the old structure and weight back.
            self.structure, self.weight.data = previous
            self._forget_rotated_weight()
            return
        # Warning, not info: the layer now computes another function than the one it was built
        # with, and default logging hides INFO.
        logger.warning("%s: adopting the checkpoint's block_k=%d, block_n=%d (was %d, %d)",
                       name, structure.block_k, structure.block_n, previous[0].block_k, previous[0].block_n)

    def _state_problems(self, state_dict, prefix: str, structure: SS1Structure) -> list[str]:
        """What would make loading ``state_dict`` under ``structure`` fail, before anything changes."""
        problems = []
        expected = {"weight": structure.weight_shape}
        if self.bias is not None:
            expected["bias"] = (self.out_features,)
        for key, shape in expected.items():
            value = state_dict.get(prefix + key)
            if value is None:
                if key == "weight" and structure is not self.structure:
                    problems.append(
                        f"checkpoint changes the block sizes to block_k={structure.block_k}, "
                        f"block_n={structure.block_n} (this layer has {self.block_k}, {self.block_n}) but holds no "
                        "weight: this layer's weight is laid out for its own block sizes (the checkpoint's need a "
                        f"weight of shape {structure.weight_shape}); a load that changes the structure needs the "
                        "weight too")
                continue
            if not isinstance(value, torch.Tensor):
                problems.append(f"{key} in the checkpoint is a {type(value).__name__}, not a tensor")
            elif tuple(value.shape) != shape:
                problems.append(f"size mismatch for {key}: the checkpoint has shape {tuple(value.shape)}, this "
                                f"layer (with the checkpoint's structure) needs {shape}")
        return problems

    def extra_repr(self) -> str:
        s = self.structure
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, redn_factor={s.redn_factor}, seed={s.seed}, "
                f"block_k={s.block_k}, block_n={s.block_n}, compression={s.compression:.2f}x")


def cache_rotated_weights(model: nn.Module, enabled: bool = True) -> int:
    """:meth:`SSL.cache_rotated_weight` on every SSL layer of ``model``; returns how many there are.

    For inference (serving, decode): ``cache_rotated_weights(model)`` once the weights are loaded.
    """
    layers = [module for module in model.modules() if isinstance(module, SSL)]
    for layer in layers:
        layer.cache_rotated_weight(enabled)
    return len(layers)
