"""How layers read the tuning database: structures for new layers, launch configs for kernels.

:data:`DATABASE` answers both, activated on first use (nothing is read when ``ss1bench`` is
imported): ``SSL(...)`` asks it for a structure (``layer.choose_structure``) and the launch-config
resolver for configs (``kernels.config.database_answer``):

- ``SSL(...)`` without explicit ``block_k``/``block_n`` asks :meth:`DatabaseLookup.structure` with its
  K, N, c, dtype and device: on a CUDA device whose GPU has a record for ``(dtype, K, N, c)`` the
  layer gets that ``(block_k, block_n)`` (the best over the tuned M buckets); otherwise None and
  the documented defaults (``ss1bench.structure``) apply.
- each kernel launch without an explicit config asks :meth:`DatabaseLookup.launch_config` with its
  :class:`~ss1bench.kernels.config.Problem` and the device's shared-memory limit (an advisory hook:
  a config over the limit is never used). The answer, in order:

  1. the record for its kind, dtype, K, N, c, structure and M bucket (the nearest tuned bucket in
     log2 M when M itself was not tuned, among the buckets of its own regime: decode M <= 64 or
     prefill; ``forward_rotated`` without records of its own takes the ``forward`` record);
  2. else the record of the **nearest tuned shape**: same kind (the same fallback), dtype, c and
     regime, any structure; distance ``|log2 N - log2 N'| + 0.5 |log2 K_red - log2 K_red'|``
     (:func:`ss1bench.kernels.heuristic.shape_distance`), the nearest M bucket of that shape; its
     config adapted to the problem (tiles clamped, splits worked out for this M and SM count);
  3. else None, and the heuristic (``ss1bench.kernels.config.heuristic_config``) runs.

  :meth:`DatabaseLookup.explain` says which (``ss1bench db show --explain``).

A GPU without a database file of its own is served by the closest GPU that has one (same
architecture first: an H100 by the H200's records; :func:`ss1bench.tuning.db.serving_chain`), with
one log line naming the files; configs over the device's shared memory are still skipped.

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
import hashlib
import logging
import threading
import warnings
from dataclasses import dataclass

from ss1bench.kernels import heuristic
from ss1bench.kernels.config import (
    DECODE_MAX_M,
    LaunchConfig,
    Problem,
    fallback_config,
    fits,
)

from .db import Serving, serving_chain
from .gpu import normalize_gpu_name
from .keys import LaunchKey, StructureKey
from .records import DatabaseError, TuningDatabase

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
        self._launch_cache: dict[tuple, LaunchAnswer | None] = {}
        self._structure_cache: dict[tuple, tuple[int, int] | None] = {}
        self._device_names: dict[int, str] = {}
        self._logged: set[tuple] = set()
        self._fingerprints: dict[str, str] = {}
        self._triton = None

    def reset(self) -> None:
        """Forget everything read (call after the files change, e.g. after ``tune``)."""
        with self._lock:
            self._views.clear()
            self._launch_cache.clear()
            self._structure_cache.clear()
            self._fingerprints.clear()
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
            serving = serving_chain(gpu, self.override, on_error=self._skip_source)
            view = _GpuView(gpu, serving.chain, serving.sibling)
            self._views[gpu] = view
            if not serving.chain:
                self._log_once(("gpu", gpu), "no ss1bench tuning database for GPU %s: layers use the default "
                                             "structure and heuristic launch configs", gpu)
            elif serving.sibling is not None:
                self._log_once(("gpu", gpu), "no ss1bench tuning database for GPU %s: using %s's, %s (%s); "
                                             "configs over this GPU's shared memory are skipped", gpu,
                               serving.sibling, ", ".join(serving.files), serving.why)
        return view

    def serving(self, gpu: str) -> Serving:
        """Which files answer for ``gpu`` (``ss1bench info``, ``db show``)."""
        return serving_chain(normalize_gpu_name(gpu), self.override, on_error=self._skip_source)

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

    def launch_config(self, problem: Problem, shared_memory_limit: int | None = None) -> LaunchConfig | None:
        """Tuned config for ``problem`` on its GPU (a record, else the record of the nearest tuned
        shape), or None (the heuristic decides). With ``shared_memory_limit``, configs over it are
        passed over. Never raises."""
        answer = self.launch_answer(problem, shared_memory_limit)
        return None if answer is None else answer.config

    def launch_answer(self, problem: Problem, shared_memory_limit: int | None = None) -> LaunchAnswer | None:
        """:meth:`launch_config` with where the config comes from (cached)."""
        if not problem.device_name:
            return None
        key = (problem, shared_memory_limit)
        cached = self._launch_cache.get(key, _MISSING)
        if cached is not _MISSING:
            return cached
        with self._lock:
            try:
                answer = self._launch_uncached(problem, shared_memory_limit)
            except Exception as exc:  # a forward pass never fails because of the database
                self._failed("launch config", exc)
                answer = None
            if len(self._launch_cache) >= _MAX_CACHED:
                self._launch_cache.clear()
            self._launch_cache[key] = answer
        return answer

    def _launch_uncached(self, problem: Problem, limit: int | None) -> LaunchAnswer | None:
        kinds = [problem.kind] + ([FALLBACK_KINDS[problem.kind]] if problem.kind in FALLBACK_KINDS else [])
        for index, kind in enumerate(kinds):
            # forward_rotated: its own records where tuned, else the plain forward's (valid for it,
            # and never slower there: only sketch_gemm differs, by the weight rotation it skips).
            last = index == len(kinds) - 1
            answer = self._record_for(dataclasses.replace(problem, kind=kind), limit, log=last)
            if answer is not None:
                return answer
        return self._nearest_shape(problem, limit)

    def _fits(self, config: LaunchConfig, problem: Problem, limit: int | None) -> bool:
        return limit is None or fits(config, problem, limit)

    def _record_for(self, problem: Problem, limit: int | None, log: bool = True) -> LaunchAnswer | None:
        gpu = normalize_gpu_name(problem.device_name)
        view = self._view(gpu)
        family = (problem.kind, problem.dtype, problem.in_features, problem.out_features, problem.redn_factor,
                  problem.block_k, problem.block_n)
        buckets = view.families.get(family)
        if not buckets:
            return None
        # A decode-sized config at a prefill M (or the reverse) is a worse guess than the
        # heuristic, which is built for each regime: only buckets of M's own regime count.
        bucket = heuristic.nearest_bucket(problem.m, buckets)
        if bucket is None:
            if log:
                decode = problem.m <= DECODE_MAX_M
                self._log_once(("regime", gpu, family, decode),
                               "no tuned %s config for %s K=%d N=%d c=%d block_k=%d block_n=%d at %s sizes on %s: "
                               "using the heuristic", *family, "decode" if decode else "prefill", gpu)
            return None
        source, record = buckets[bucket]
        try:
            config = LaunchConfig.from_dict(record["config"])
        except (KeyError, TypeError, ValueError) as exc:  # validated on load; belt and braces
            logger.error("ignoring a bad record in %s: %s", source, exc)
            return None
        key = LaunchKey(*family, bucket).text()
        if not self._fits(config, problem, limit):
            self._log_once(("too big", gpu, key, limit),
                           "tuned config %s (%s) needs more shared memory than %s has (%d B): not used", key,
                           source, problem.device_name, limit)
            return None
        self._check_triton(source, record)
        return LaunchAnswer(config, "record", key, source, view.sibling)

    def _nearest_shape(self, problem: Problem, limit: int | None) -> LaunchAnswer | None:
        """The record of the nearest tuned layer shape: same kind (``forward_rotated`` falls back
        to ``forward``), dtype, c and regime; distance :func:`ss1bench.kernels.heuristic.shape_distance`
        on N and K_red; its config adapted to this problem (:func:`~ss1bench.kernels.heuristic.adapt`)."""
        gpu = normalize_gpu_name(problem.device_name)
        view = self._view(gpu)
        same_c = [e for e in view.examples() if e.redn_factor == problem.redn_factor]
        ranked = heuristic.ranked(problem, same_c, dtypes=(problem.dtype,))
        sm_count = heuristic.device_sm_count(problem.device_name)
        for example in ranked:
            config = heuristic.adapt(example.config, problem, sm_count, example.m)
            if config is None or not self._fits(config, problem, limit):
                continue
            source = view.sources[example.key]
            self._log_once(("nearest", gpu, problem.kind, problem.dtype, problem.in_features, problem.out_features,
                            problem.redn_factor, problem.m <= DECODE_MAX_M),
                           "no tuned %s config for %s K=%d N=%d c=%d on %s: using the nearest tuned shape's (%s)",
                           problem.kind, problem.dtype, problem.in_features, problem.out_features,
                           problem.redn_factor, gpu, example.key)
            return LaunchAnswer(config, "nearest shape", example.key, source, view.sibling,
                                heuristic.shape_distance(problem.k_red, problem.out_features, example.k_red,
                                                         example.out_features))
        if view.chain:
            self._log_once(("launch", gpu, problem.kind, problem.dtype, problem.redn_factor,
                            problem.m <= DECODE_MAX_M),
                           "no tuned %s config for %s c=%d at M=%d on %s (nor of a nearby shape): using the "
                           "heuristic", problem.kind, problem.dtype, problem.redn_factor, problem.m, gpu)
        return None

    def explain(self, problem: Problem, shared_memory_limit: int) -> LaunchAnswer:
        """What a launch of ``problem`` gets and why: a record, the nearest tuned shape's record, or
        the heuristic (``ss1bench db show --explain``)."""
        answer = self.launch_answer(problem, shared_memory_limit)
        if answer is not None:
            return answer
        sm_count = heuristic.device_sm_count(problem.device_name)
        found = heuristic.nearest_config(problem, heuristic.reference_examples(), shared_memory_limit, sm_count)
        if found is not None:
            config, example = found
            return LaunchAnswer(config, "heuristic", example.key, f"learned rule ({heuristic.REFERENCE_GPU} records)",
                                None, heuristic.shape_distance(problem.k_red, problem.out_features, example.k_red,
                                                               example.out_features))
        return LaunchAnswer(fallback_config(problem, shared_memory_limit), "heuristic", "", "fixed rule")

    def fingerprint(self, device) -> str:
        """What this lookup answers from for ``device``, as a digest: the GPU's name and the
        databases serving it (user, shipped or a sibling's), in order, as they were read (their
        canonical JSON, not the files again); ``"cpu"`` off CUDA. The same records give the same
        digest on any machine (paths do not count). Cached until :meth:`reset`."""
        if getattr(device, "type", None) != "cuda":
            return "cpu"
        gpu = normalize_gpu_name(self._device_name(device.index))
        digest = self._fingerprints.get(gpu)
        if digest is None:
            with self._lock:
                chain = self._view(gpu).chain
            hasher = hashlib.sha256(gpu.encode())
            for database in chain:
                hasher.update(database.dumps().encode())
            digest = self._fingerprints[gpu] = hasher.hexdigest()
        return digest

    def _device_name(self, index: int | None) -> str:
        import torch

        if index is None:
            index = torch.cuda.current_device()
        name = self._device_names.get(index)
        if name is None:
            name = self._device_names[index] = torch.cuda.get_device_name(index)
        return name

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
            name = self._device_name(index)
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


@dataclass(frozen=True)
class LaunchAnswer:
    """A launch config and where it comes from: ``source`` is ``"record"`` (the problem's own
    key, at the nearest M bucket of its regime), ``"nearest shape"`` (the record ``key`` of the
    nearest tuned shape, at ``distance``) or ``"heuristic"``; ``file`` is the database file (or
    the rule); ``sibling`` the GPU whose records serve this one, if not its own."""

    config: LaunchConfig
    source: str
    key: str = ""
    file: str = ""
    sibling: str | None = None
    distance: float = 0.0


class _GpuView:
    """The chain of databases serving one GPU, flattened: user records shadow shipped ones per key."""

    def __init__(self, gpu: str, chain: list[TuningDatabase], sibling: str | None = None) -> None:
        self.gpu = gpu
        self.chain = chain
        self.sibling = sibling
        self.families: dict[tuple, dict[int, tuple[str, dict]]] = {}
        self.records: dict[str, dict] = {}
        self.sources: dict[str, str] = {}
        for database in reversed(chain):  # shipped first, so user records overwrite
            for family, buckets in database.launch_families().items():
                target = self.families.setdefault(family, {})
                for m, (key, record) in buckets.items():
                    target[m] = (str(database.path), record)
                    self.records[key.text()] = record
                    self.sources[key.text()] = str(database.path)
        self._examples: tuple | None = None

    def examples(self) -> tuple:
        """The records as nearest-shape examples (their configs as recorded), built once."""
        if self._examples is None:
            self._examples = heuristic.examples_from_records(self.records, grid=False)
        return self._examples


#: The process-wide lookup: the launch-config resolver's default database
#: (``kernels.config.database_answer``) and the layers' default structure advice.
DATABASE = DatabaseLookup()


__all__ = ["DATABASE", "DatabaseLookup", "LaunchKey"]
