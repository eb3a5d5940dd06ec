"""The direct launch path (kernels/launch.py) with a stand-in kernel: which calls reuse a cached
binary, and that the binary gets every argument in parameter order."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ss1bench.kernels import launch as direct


class FakeParam(SimpleNamespace):
    pass


class FakeBinary:
    """What ``kernel[grid]`` returns: its C launcher is ``run``."""

    function = object()
    packed_metadata = object()

    def __init__(self, launches: list) -> None:
        self.launches = launches

    def run(self, grid_x, grid_y, grid_z, stream, function, packed_metadata, launch_metadata, enter_hook,
            exit_hook, *args):
        assert function is self.function and packed_metadata is self.packed_metadata
        assert launch_metadata is None and enter_hook is None and exit_hook is None  # no hooks installed
        self.launches.append(("direct", (grid_x, grid_y, grid_z), args, stream))


PARAMS = (FakeParam(name="x", is_constexpr=False, do_not_specialize=False),
          FakeParam(name="n", is_constexpr=False, do_not_specialize=False),
          FakeParam(name="seed", is_constexpr=False, do_not_specialize=True),
          FakeParam(name="BLOCK", is_constexpr=True, do_not_specialize=False))


class FakeKernel:
    """Parameters: x (tensor), n (int), seed (int, not specialized), BLOCK (constexpr)."""

    params = PARAMS

    def __init__(self) -> None:
        self.launches: list = []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.launches.append(("triton", grid, args, kwargs))
            return FakeBinary(self.launches)
        return run


@pytest.fixture
def kernel(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setenv("SS1BENCH_DIRECT_LAUNCH", "1")
    monkeypatch.setattr(direct, "current_device", lambda: 0)
    monkeypatch.setattr(direct, "_current_raw_stream", lambda device: 1234)
    direct.clear()
    yield FakeKernel()
    direct.clear()


def paths(kernel) -> list[str]:
    return [entry[0] for entry in kernel.launches]


def test_second_launch_with_the_same_specialization_is_direct(kernel):
    x = torch.zeros(64)
    direct.launch(kernel, (4,), x, 32, seed=5, BLOCK=16, num_warps=4)
    direct.launch(kernel, (8, 2), x, 48, seed=7, BLOCK=16, num_warps=4)
    assert paths(kernel) == ["triton", "direct"]
    _, grid, args, stream = kernel.launches[1]
    assert grid == (8, 2, 1) and stream == 1234
    assert args[1:] == (48, 7, 16) and args[0] is x  # every parameter, constexprs included, in order


@pytest.mark.parametrize("change", ["misaligned tensor", "dtype", "int one", "int not multiple of 16",
                                    "int64 range", "constexpr", "num_warps", "maxnreg", "no-specialize int64"])
def test_a_different_specialization_goes_through_triton(kernel, change):
    base = torch.zeros(64)
    args = {"x": base, "n": 32, "seed": 5, "BLOCK": 16, "num_warps": 4}
    direct.launch(kernel, (1,), args["x"], args["n"], seed=args["seed"], BLOCK=args["BLOCK"], num_warps=4)
    changed = dict(args)
    if change == "misaligned tensor":
        changed["x"] = base[1:]
    elif change == "dtype":
        changed["x"] = base.double()
    elif change == "int one":
        changed["n"] = 1
    elif change == "int not multiple of 16":
        changed["n"] = 33
    elif change == "int64 range":
        changed["n"] = 2**40
    elif change == "constexpr":
        changed["BLOCK"] = 32
    elif change == "num_warps":
        changed["num_warps"] = 8
    elif change == "maxnreg":  # a compile option like num_warps: another binary
        changed["maxnreg"] = 255
    else:
        changed["seed"] = 2**40
    direct.launch(kernel, (1,), changed["x"], changed["n"], seed=changed["seed"], BLOCK=changed["BLOCK"],
                  num_warps=changed["num_warps"], **({"maxnreg": changed["maxnreg"]} if "maxnreg" in changed else {}))
    assert paths(kernel) == ["triton", "triton"]


def test_unspecialized_int_values_share_a_binary(kernel):
    x = torch.zeros(64)
    for seed in (5, 16, 1, 12345):
        direct.launch(kernel, (1,), x, 32, seed=seed, BLOCK=16)
    assert paths(kernel) == ["triton", "direct", "direct", "direct"]


@pytest.mark.parametrize("setting", ["interpreter", "switched off", "empty"])
def test_interpreter_and_switch_take_the_normal_path(kernel, monkeypatch, setting):
    if setting == "interpreter":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    else:
        monkeypatch.setenv("SS1BENCH_DIRECT_LAUNCH", "0" if setting == "switched off" else "")
    direct.clear()  # the switch is read once
    x = torch.zeros(64)
    for _ in range(3):
        direct.launch(kernel, (1,), x, 32, seed=5, BLOCK=16)
    assert paths(kernel) == ["triton"] * 3


def test_the_direct_path_is_on_by_default(kernel, monkeypatch):
    monkeypatch.delenv("SS1BENCH_DIRECT_LAUNCH")
    direct.clear()
    x = torch.zeros(64)
    for _ in range(2):
        direct.launch(kernel, (1,), x, 32, seed=5, BLOCK=16)
    assert paths(kernel) == ["triton", "direct"]


def test_the_switch_is_read_once(kernel, monkeypatch):
    x = torch.zeros(64)
    direct.launch(kernel, (1,), x, 32, seed=5, BLOCK=16)
    monkeypatch.setenv("SS1BENCH_DIRECT_LAUNCH", "0")  # not seen until clear()
    direct.launch(kernel, (1,), x, 32, seed=5, BLOCK=16)
    direct.clear()
    direct.launch(kernel, (1,), x, 32, seed=5, BLOCK=16)
    assert paths(kernel) == ["triton", "direct", "triton"]


def test_an_argument_of_another_type_is_never_cached(kernel):
    for _ in range(2):
        direct.launch(kernel, (1,), None, 32, seed=5, BLOCK=16)
    assert paths(kernel) == ["triton", "triton"]


def test_a_capture_gets_every_launch_and_nothing_runs(kernel):
    """The tuner collects compiles through launch.capture: inside it, launches (cached binary or
    not, recorded or not) reach the handler only; outside, the launch path is as before."""
    x = torch.zeros(64)
    direct.launch(kernel, (1,), x, 32, seed=5, BLOCK=16)  # cached
    seen = []
    with direct.capture(lambda *call: seen.append(call)):
        direct.launch(kernel, (1,), x, 32, seed=5, BLOCK=16)
        with direct.record() as launches:
            direct.launch(kernel, (2,), x, 16, seed=5, BLOCK=16)
    assert launches == [] and paths(kernel) == ["triton"]  # nothing ran inside
    assert [(grid, args[1:], kwargs) for _, grid, args, kwargs in seen] == [
        ((1,), (32,), {"seed": 5, "BLOCK": 16}), ((2,), (16,), {"seed": 5, "BLOCK": 16})]
    direct.launch(kernel, (1,), x, 32, seed=5, BLOCK=16)
    assert paths(kernel) == ["triton", "direct"]


def test_a_kernel_without_parameter_metadata_is_launched_the_normal_way(kernel):
    del FakeKernel.params  # class attribute: restored below
    try:
        for _ in range(2):
            direct.launch(kernel, (1,), torch.zeros(64), 32, seed=5, BLOCK=16)
    finally:
        FakeKernel.params = PARAMS
    assert paths(kernel) == ["triton", "triton"]


def test_inline_key_entries_equal_spec():
    # specialization_key keys ints and tensors inline (per-launch cost); spec() must say the same
    class Info:
        constexpr = (False,) * 7
        no_specialize = (False, True, False, False, False, False, False)

    values = [1, 7, 32, 2**40, torch.zeros(3), True, 0.5]
    key = direct.specialization_key(Info, values, 4, 2, 0)
    expected = [entry for value, off in zip(values, Info.no_specialize, strict=True)
                for entry in direct.spec(value, off)]
    assert key == (0, 4, 2, None, *expected)
    assert len(set(key[4:8])) == 4  # 1, unspecialized 7, 32 and a 64-bit value key differently


# ---- recorded launches (the forward plans' building block) ---------------------------------------


def test_a_recorded_launch_replays_its_binary_with_new_leading_tensors(kernel):
    kernel.arg_names = [p.name for p in PARAMS]
    x, y = torch.zeros(64), torch.ones(64)
    with direct.record() as launches:
        direct.launch(kernel, (4, 2), x, 32, seed=5, BLOCK=16, num_warps=4)
    (recorded,) = launches
    assert paths(kernel) == ["triton"]  # recording launches the normal way
    assert recorded.tensors == 1 and recorded.tail == (32, 5, 16) and recorded.grid == (4, 2, 1)
    recorded(y)
    assert paths(kernel) == ["triton", "direct"]
    _, grid, args, stream = kernel.launches[1]
    assert grid == (4, 2, 1) and stream == 1234 and args[0] is y and args[1:] == (32, 5, 16)


def test_recording_sees_only_its_own_thread_and_block(kernel):
    import threading

    kernel.arg_names = [p.name for p in PARAMS]
    x = torch.zeros(64)
    with direct.record() as launches:
        other = threading.Thread(target=lambda: direct.launch(kernel, (1,), x, 32, seed=5, BLOCK=16))
        other.start()
        other.join()
        assert launches == []  # the other thread's launch is not this recording's
        with direct.record() as inner:
            direct.launch(kernel, (1,), x, 32, seed=5, BLOCK=16)
        assert len(inner) == 1 and launches == []
    direct.launch(kernel, (1,), x, 32, seed=5, BLOCK=16)
    assert len(launches) == 0 and len(inner) == 1


def test_launches_that_cannot_be_replayed_are_marked(kernel):
    kernel.arg_names = [p.name for p in PARAMS]
    x = torch.zeros(64)
    with direct.record() as launches:
        direct.launch(kernel, (1,), x, 32, seed=5)  # BLOCK left to its default: not recorded
        direct.launch(kernel, (1,), x, 32, seed=x, BLOCK=16)  # a tensor among the fixed arguments
    assert launches[0] is None and launches[1].tensors == -1


# ---- a Triton whose launch interface changed ---------------------------------------------------------------

#: Triton's launch as it would read if a release added an argument before the kernel's (say, a
#: scratch buffer): the direct call would hand the binary shifted arguments.
CHANGED_LAUNCH = '''
    def run(self, *args, grid, warmup, **kwargs):
        kernel.run(grid_0, grid_1, grid_2, stream, kernel.function, kernel.packed_metadata, launch_metadata,
                   knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook, scratch, *bound_args.values())
'''


#: The CompiledKernel runner of a release that launches some other way.
CHANGED_RUNNER = '''
    def __getitem__(self, grid):
        return functools.partial(self._launch, grid)
'''


def _changed(part: str):
    """Triton's real launch sources with ``part`` replaced by a changed one."""
    real = direct._runner_sources()

    def sources():
        return {**real, part: CHANGED_LAUNCH if part == "JITFunction.run" else CHANGED_RUNNER}
    return sources


def test_the_installed_triton_has_the_expected_launch_interface():
    assert direct.interface_mismatch() is None


def _unreadable():
    raise OSError("could not get source code")


@pytest.mark.parametrize("change", ["kernel[grid] argument list", "CompiledKernel runner", "source unavailable",
                                    "no launch hooks"])
def test_a_changed_launch_interface_falls_back_to_kernel_grid_and_logs_once(kernel, monkeypatch, caplog, change):
    if change == "kernel[grid] argument list":
        monkeypatch.setattr(direct, "_runner_sources", _changed("JITFunction.run"))
    elif change == "CompiledKernel runner":
        monkeypatch.setattr(direct, "_runner_sources", _changed("CompiledKernel.__getitem__"))
    elif change == "source unavailable":
        monkeypatch.setattr(direct, "_runner_sources", _unreadable)
    else:
        monkeypatch.setattr(direct.triton, "knobs", SimpleNamespace(runtime=SimpleNamespace()))
    direct.clear()  # the interface is checked once: again after clear()
    kernel.arg_names = [p.name for p in PARAMS]
    x = torch.zeros(64)
    with caplog.at_level("WARNING", logger="ss1bench.kernels"):
        for _ in range(3):
            direct.launch(kernel, (1,), x, 32, seed=5, BLOCK=16)
        with direct.record() as launches:
            direct.launch(kernel, (1,), x, 32, seed=5, BLOCK=16, num_warps=4)
        launches[0](x)  # a recorded launch replays through kernel[grid] too
    assert paths(kernel) == ["triton"] * 5
    assert launches[0].binary is None
    warned = [r.getMessage() for r in caplog.records if r.name == "ss1bench.kernels"]
    assert len(warned) == 1 and "kernel[grid]" in warned[0], warned
