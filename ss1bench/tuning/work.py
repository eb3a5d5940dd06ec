"""What a tune works through: its options, the work items, and the plan against the database.

One work item is a layer ``(dtype, K, N, c)`` with its M buckets and kernel kinds, tuned on its
*primary* structure (the default, or the structure already recorded for it) and, when the structure
is searched, compared against the other structure candidates of :func:`.space.structure_candidates`.
:func:`plan_work` splits the layers into items still to tune and items the database already covers
(the resume rules); :func:`estimate_units` counts an item's measurements (the progress bar's unit,
and the cost side of :func:`.budget.order_by_gain`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ss1bench.kernels.config import LaunchConfig, Problem

from . import space
from .keys import LaunchKey, StructureKey
from .records import TuningDatabase
from .shapes import Layer


@dataclass(frozen=True)
class TuneOptions:
    kinds: tuple[str, ...] = ("forward",)
    structure_search: bool = True
    force: bool = False
    refine: bool = True
    #: Screening winners re-timed with longer runs before one is recorded.
    top_confirm: int = 3
    #: Best configs of the primary structure tried on each other structure.
    probe_top: int = 2
    #: A structure other than the primary must be this much faster (geometric mean) to be chosen.
    structure_min_gain: float = 0.03
    #: Decode ``forward``: a one-launch config within this fraction of a faster ``sketch_gemm`` is
    #: recorded instead (see :func:`.selection.launches`).
    single_launch_margin: float = 0.05


@dataclass
class WorkItem:
    dtype: str
    in_features: int
    out_features: int
    redn_factor: int
    m_buckets: tuple[int, ...]
    kinds: tuple[str, ...]
    primary: tuple[int, int]
    structures: list[tuple[int, int]]
    todo: list[tuple[str, int]]
    recorded: dict[tuple[str, int], LaunchConfig] = field(default_factory=dict)
    names: tuple[str, ...] = ()
    #: The database already has a structure record for this layer (never replaced by an unsearched one).
    structure_recorded: bool = False
    #: Layers of this shape in the model tuned for (``tune --model``), else 1.
    count: int = 1

    @property
    def label(self) -> str:
        return f"{self.dtype} K={self.in_features} N={self.out_features} c={self.redn_factor}"

    @property
    def searches_structure(self) -> bool:
        return len(self.structures) > 1

    def pairs(self) -> list[tuple[str, int]]:
        return [(kind, m) for kind in self.kinds for m in self.m_buckets]

    def structure_pairs(self) -> list[tuple[str, int]]:
        """The pairs on which structures are compared: the prefill ones (all pairs if none is)."""
        prefill = [(kind, m) for kind, m in self.pairs() if not space.is_decode(m)]
        return prefill or self.pairs()


def plan_work(layers: list[Layer], redn_factors: list[int], dtypes: list[str], options: TuneOptions,
              database: TuningDatabase | None) -> tuple[list[WorkItem], list[WorkItem]]:
    """(items to tune, items already done), from the layers and what ``database`` holds.

    Resume rules: a recorded structure is kept and only missing launch records of it are tuned; an
    item whose structure and launch records all exist is done. ``force`` re-tunes every launch
    record asked for, and the structure too when ``structure_search`` is on (without it, the
    recorded structure stays: re-tuning some buckets never moves a layer to another structure).
    """
    todo_items, done_items = [], []
    for dtype in dtypes:
        for layer in layers:
            k, n = layer.in_features, layer.out_features
            for c in redn_factors:
                if layer.redn_factors and c not in layer.redn_factors:
                    continue  # the model keeps this layer dense at c
                existing = None
                if database is not None and not (options.force and options.structure_search):
                    existing = database.structure(StructureKey(dtype, k, n, c))
                searched = bool(existing and existing.get("searched", True))
                if existing is not None:
                    primary = (int(existing["block_k"]), int(existing["block_n"]))
                else:
                    primary = space.default_structure(k, c)
                if options.structure_search and not searched:
                    structures = [primary] + [s for s in space.structure_candidates(k, n, c) if s != primary]
                else:
                    structures = [primary]
                pairs = [(kind, m) for kind in options.kinds for m in layer.m_buckets]
                todo, recorded = [], {}
                for kind, m in pairs:
                    record = None
                    if database is not None and not options.force:
                        record = database.launch_record(LaunchKey(kind, dtype, k, n, c, *primary, m))
                    if record is None:
                        todo.append((kind, m))
                    else:
                        recorded[(kind, m)] = LaunchConfig.from_dict(record["config"])
                item = WorkItem(dtype, k, n, c, layer.m_buckets, tuple(options.kinds), primary, structures, todo,
                                recorded, layer.names, structure_recorded=existing is not None, count=layer.count)
                needs_structure = existing is None or (options.structure_search and not searched)
                (todo_items if todo or needs_structure else done_items).append(item)
    return todo_items, done_items


def problem_for(item: WorkItem, kind: str, m: int, structure: tuple[int, int], device_name: str = "") -> Problem:
    return Problem(kind, m, item.in_features, item.out_features, item.redn_factor, structure[0], structure[1],
                   item.dtype, device_name)


def estimate_units(item: WorkItem, options: TuneOptions, shared_memory_limit: int, sm_count: int) -> int:
    """Measurements an item will take (the progress bar's unit)."""
    units = 0
    others = len(item.structures) - 1
    compared = set(item.structure_pairs())
    for kind, m in item.pairs():
        probed = others if (kind, m) in compared else 0
        if (kind, m) in item.todo:
            problem = problem_for(item, kind, m, item.primary)
            kept = len(space.launch_candidates(problem, shared_memory_limit, sm_count).kept)
            # refinements: a stage more and less, and a decode forward's register cap
            refined = 3 + space.offers_register_cap(problem)
            units += kept + (refined if options.refine else 0) + options.top_confirm + 1
            units += probed * min(options.probe_top, kept)
        elif item.searches_structure:
            units += 1 + probed
    return units
