"""``ss1bench`` command line: one click group; each command lives in its own module.

Exit codes: 0 success, 1 failure while working, 2 bad usage or a missing prerequisite
(no CUDA device, no GPU matching ``--gpu``, a corrupted database file).
"""

from __future__ import annotations

import platform

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ss1bench")
def main() -> None:
    """Fast SS1 (Sketch Structured Transform) layers: tune, benchmark, report."""


@main.command()
def info() -> None:
    """Versions and visible devices (works without a GPU)."""
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:  # pragma: no cover - triton is a dependency
        triton_version = "not installed"
    click.echo(f"ss1bench {__version__}, python {platform.python_version()}, torch {torch.__version__}, "
               f"triton {triton_version}")
    if not torch.cuda.is_available():
        click.echo("CUDA devices: none (the CPU path uses the pure-torch reference)")
        return
    for index in range(torch.cuda.device_count()):
        click.echo(f"cuda:{index}: {torch.cuda.get_device_name(index)}")


# Commands from other modules register here (one line each).
from . import e2e as _e2e  # noqa: E402, F401  (registers e2e)
from .bench import commands as _bench_commands  # noqa: E402, F401  (registers bench, report)
from .tuning import commands as _tuning_commands  # noqa: E402, F401  (registers tune, db)
