"""How layers read the tuning database: a structure advisor and a launch-config hook.

:func:`install_database_hooks` (called when ``ss1bench`` is imported) registers both:

- ``SSL(...)`` without explicit ``block_k``/``block_n`` asks :meth:`DatabaseLookup.structure` with its
  K, N, c, dtype and device: on a CUDA device whose GPU has a record for ``(dtype, K, N, c)`` the
  layer gets that ``(block_k, block_n)`` (the best over the tuned M buckets); otherwise None and
  the documented defaults (``ss1bench.structure``) apply.
- each kernel launch without an explicit config asks :meth:`DatabaseLookup.launch_config` with its
  :class:`~ss1bench.kernels.config.Problem`: the record for its kind, dtype, K, N, c, structure and
  M bucket (the nearest tuned bucket in log2 M when M itself was not tuned, among the buckets of
  its own regime: decode M <= 64 or prefill; ``forward_rotated`` without records of its own
  takes the ``forward`` record), else None and the
  heuristic (``ss1bench.kernels.config.heuristic_config``) runs.

Nothing touches CUDA at import; the first lookup reads the files (user database first, then the
shipped one, see :mod:`.db`) and every answer is cached in memory. A CPU problem
(``device_name == ""``) or a CPU device is answered None at once. A file that cannot be used (bad
JSON, not UTF-8, nested too deeply, invalid records) is skipped with one warning on the
``ss1bench.tuning`` logger, and the other file still answers: a corrupted user database leaves the
shipped one in use. Anything else that goes wrong in a lookup is logged once and answered None (the
defaults and the heuristic): neither ``SSL(...)`` nor a forward pass ever fails because of the
database.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import warnings

from ss1bench.kernels.config import DECODE_MAX_M, LaunchConfig, Problem, register_config_hook

from .db import DatabaseError, LaunchKey, StructureKey, TuningDatabase, load_chain, nearest_bucket
from .gpu import normalize_gpu_name

logger = logging.getLogger("ss1bench.tuning")

#: Cached answers kept before the launch cache is cleared (distinct M values add entries).
_MAX_CACHED = 4096

_TORCH_DTYPE_NAMES = {"torch.float16": "fp16", "torch.bfloat16": "bf16", "torch.float32": "fp32"}

_triton_warning_issued = False


def _installed_triton() -> str:
    try:
        from importlib.metadata import version

        return version("triton")
    except Exception:  # not installed as a distribution: no comparison
        return ""


def warn_triton_mismatch(source: str, record_triton: str, installed: str) -> None:
    """One warning per process when a record was tuned with another triton version."""
    global _triton_warning_issued
    if _triton_warning_issued or not record_triton or not installed or record_triton == installed:
        return
    _triton_warning_issued = True
    warnings.warn(
        f"ss1bench tuning database {source} was tuned with triton {record_triton}, this is triton {installed}: "
        "configs still launch correctly but may no longer be the fastest; re-run `ss1bench tune` to refresh "
        "(warned once per process)",
        RuntimeWarning,
        stacklevel=3,
    )


class DatabaseLookup:
    """Cached, thread-safe answers from the tuning databases of the GPUs seen so far."""

    def __init__(self, override: str | None = None) -> None:
        self.override = override
        self._lock = threading.Lock()
        self._views: dict[str, _GpuView] = {}
        self._launch_cache: dict[Problem, LaunchConfig | None] = {}
        self._structure_cache: dict[tuple, tuple[int, int] | None] = {}
        self._device_names: dict[int, str] = {}
        self._logged: set[tuple] = set()
        self._triton = None

    def reset(self) -> None:
        """Forget everything read (call after the files change, e.g. after ``tune``)."""
        with self._lock:
            self._views.clear()
            self._launch_cache.clear()
            self._structure_cache.clear()
            self._logged.clear()
        from ss1bench.kernels import config

        invalidate = getattr(config, "invalidate_config_cache", None)
        if invalidate is not None:  # launchers cache resolved configs too
            invalidate()

    def _log_once(self, key: tuple, message: str, *args) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.info(message, *args)

    def _skip_source(self, error: DatabaseError) -> None:
        key = ("bad file", str(error))
        if key not in self._logged:
            self._logged.add(key)
            logger.warning("ignoring an ss1bench tuning database file (the others still answer): %s", error)

    def _view(self, gpu: str) -> _GpuView:
        view = self._views.get(gpu)
        if view is None:
            chain = load_chain(gpu, self.override, on_error=self._skip_source)
            view = _GpuView(gpu, chain)
            self._views[gpu] = view
            if not chain:
                self._log_once(("gpu", gpu), "no ss1bench tuning database for GPU %s: layers use the default "
                                             "structure and heuristic launch configs", gpu)
        return view

    def _check_triton(self, source: str, record: dict) -> None:
        if self._triton is None:
            self._triton = _installed_triton()
        warn_triton_mismatch(source, str(record.get("triton", "")), self._triton)

    # ---- launch configs -----------------------------------------------------------------------
    def _failed(self, what: str, exc: Exception) -> None:
        """A lookup that raised: logged once per kind of failure; the caller answers None."""
        key = ("failed", what, type(exc).__name__)
        if key not in self._logged:
            self._logged.add(key)
            logger.warning("ss1bench tuning database %s lookup failed (%s: %s): using the defaults", what,
                           type(exc).__name__, exc)

    def launch_config(self, problem: Problem) -> LaunchConfig | None:
        """Tuned config for ``problem`` on its GPU, or None (the heuristic decides). Never raises."""
        if not problem.device_name:
            return None
        cached = self._launch_cache.get(problem, _MISSING)
        if cached is not _MISSING:
            return cached
        with self._lock:
            try:
                answer = self._launch_uncached(problem)
            except Exception as exc:  # a forward pass never fails because of the database
                self._failed("launch config", exc)
                answer = None
            if len(self._launch_cache) >= _MAX_CACHED:
                self._launch_cache.clear()
            self._launch_cache[problem] = answer
        return answer

    def _launch_uncached(self, problem: Problem) -> LaunchConfig | None:
        if problem.kind in FALLBACK_KINDS:
            # forward_rotated: its own records where tuned, else the plain forward's (valid for it,
            # and never slower there: only sketch_gemm differs, by the weight rotation it skips).
            answer = self._launch_for_kind(problem, log=False)
            if answer is not None:
                return answer
            problem = dataclasses.replace(problem, kind=FALLBACK_KINDS[problem.kind])
        return self._launch_for_kind(problem)

    def _launch_for_kind(self, problem: Problem, log: bool = True) -> LaunchConfig | None:
        gpu = normalize_gpu_name(problem.device_name)
        view = self._view(gpu)
        family = (problem.kind, problem.dtype, problem.in_features, problem.out_features, problem.redn_factor,
                  problem.block_k, problem.block_n)
        buckets = view.families.get(family)
        if not buckets:
            if not log:
                return None
            if view.chain:
                self._log_once(("launch", gpu, family),
                               "no tuned %s config for %s K=%d N=%d c=%d block_k=%d block_n=%d on %s: using the "
                               "heuristic", *family, gpu)
            return None
        # A decode-sized config at a prefill M (or the reverse) is a worse guess than the
        # heuristic, which is built for each regime: only buckets of M's own regime count.
        decode = problem.m <= DECODE_MAX_M
        same_regime = [b for b in buckets if (b <= DECODE_MAX_M) == decode]
        if not same_regime and not log:
            return None
        if not same_regime:
            self._log_once(("regime", gpu, family, decode),
                           "no tuned %s config for %s K=%d N=%d c=%d block_k=%d block_n=%d at %s sizes on %s: "
                           "using the heuristic", *family, "decode" if decode else "prefill", gpu)
            return None
        bucket = nearest_bucket(problem.m, same_regime)
        source, record = buckets[bucket]
        try:
            config = LaunchConfig.from_dict(record["config"])
        except (KeyError, TypeError, ValueError) as exc:  # validated on load; belt and braces
            logger.error("ignoring a bad record in %s: %s", source, exc)
            return None
        self._check_triton(source, record)
        return config

    # ---- structures ---------------------------------------------------------------------------
    def structure(self, in_features: int, out_features: int, redn_factor: int, dtype, device) -> tuple[int, int] | None:
        """Recommended ``(block_k, block_n)`` for a new layer on ``device``, or None. Never raises
        because of the database (a bad file or record: None, the defaults)."""
        if getattr(device, "type", None) != "cuda":
            return None
        dtype_name = _TORCH_DTYPE_NAMES.get(str(dtype))
        if dtype_name is None:
            return None
        index = device.index
        if index is None:
            import torch

            index = torch.cuda.current_device()
        key = (index, dtype_name, in_features, out_features, redn_factor)
        if key in self._structure_cache:
            return self._structure_cache[key]
        with self._lock:
            name = self._device_names.get(index)
            if name is None:
                import torch

                name = self._device_names[index] = torch.cuda.get_device_name(index)
            try:
                answer = self._structure_uncached(normalize_gpu_name(name), dtype_name, in_features, out_features,
                                                  redn_factor)
            except Exception as exc:  # building a layer never fails because of the database
                self._failed("structure", exc)
                answer = None
            self._structure_cache[key] = answer
        return answer

    def structure_for_gpu(self, gpu: str, dtype: str, in_features: int, out_features: int,
                          redn_factor: int) -> tuple[int, int] | None:
        """Same answer as :meth:`structure`, for a GPU name (``db show`` and tests)."""
        with self._lock:
            return self._structure_uncached(normalize_gpu_name(gpu), dtype, in_features, out_features, redn_factor)

    def _structure_uncached(self, gpu: str, dtype: str, in_features: int, out_features: int,
                            redn_factor: int) -> tuple[int, int] | None:
        view = self._view(gpu)
        key = StructureKey(dtype, in_features, out_features, redn_factor).text()
        for database in view.chain:
            record = database.structures.get(key)
            if record is not None:
                self._check_triton(str(database.path), record)
                return int(record["block_k"]), int(record["block_n"])
        if view.chain:
            self._log_once(("structure", gpu, key), "no tuned structure for %s on %s: using the default", key, gpu)
        return None


_MISSING = object()

#: Kinds answered with another kind's records when they have none of their own.
FALLBACK_KINDS = {"forward_rotated": "forward"}


class _GpuView:
    """The chain of databases of one GPU, flattened: user records shadow shipped ones per key."""

    def __init__(self, gpu: str, chain: list[TuningDatabase]) -> None:
        self.gpu = gpu
        self.chain = chain
        self.families: dict[tuple, dict[int, tuple[str, dict]]] = {}
        for database in reversed(chain):  # shipped first, so user records overwrite
            for family, buckets in database.launch_families().items():
                target = self.families.setdefault(family, {})
                for m, (_key, record) in buckets.items():
                    target[m] = (str(database.path), record)


#: The process-wide lookup the hooks use.
DATABASE = DatabaseLookup()
_remove_hook = None


def install_database_hooks() -> None:
    """Register the database as structure advisor and launch-config hook (idempotent)."""
    global _remove_hook
    from ss1bench.layer import set_structure_advisor

    set_structure_advisor(DATABASE.structure)
    if _remove_hook is None:
        _remove_hook = register_config_hook(DATABASE.launch_config)


def uninstall_database_hooks() -> None:
    global _remove_hook
    from ss1bench.layer import set_structure_advisor

    set_structure_advisor(None)
    if _remove_hook is not None:
        _remove_hook()
        _remove_hook = None


__all__ = ["DATABASE", "DatabaseLookup", "LaunchKey", "install_database_hooks", "uninstall_database_hooks"]
