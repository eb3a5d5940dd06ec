"""``ss1bench`` command line: one click group; each command lives in its own module.

Exit codes: 0 success, 1 failure while working, 2 bad usage or a missing prerequisite
(no CUDA device, no GPU matching ``--gpu``, a corrupted database file).

Errors, one convention for every command (commands in other modules follow it through
:func:`fail`, :class:`CommandError` and :class:`AliasedOption`):

- one line on stderr, ``ss1bench <command>: error: <message>``, no traceback and no usage block;
  Click's own usage errors (unknown option, bad value, missing argument) are printed the same way;
- exit code 2 for usage errors and missing prerequisites, 1 for a failure while working;
- one name per option across commands (``--redn-factors``, ``--m-buckets``, ``--dtype``, ...);
  an old spelling stays accepted as a hidden alias (``AliasedOption``).
"""

from __future__ import annotations

import platform

import click

from . import __version__

#: The program name every error line starts with (whatever the script was called as).
PROG = "ss1bench"


def command_name(ctx: click.Context | None) -> str:
    """``ss1bench``, ``ss1bench tune``, ``ss1bench db show``: the command a context runs."""
    names = []
    while ctx is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    names.reverse()
    return " ".join([PROG, *(name for name in names[1:] if name)])


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


class CommandError(click.ClickException):
    """An error shown as ``ss1bench <command>: error: <message>`` (one line, stderr) with exit
    code ``code`` (2: usage or a missing prerequisite; 1: a failure while working)."""

    def __init__(self, message: str, command: str | None = None, code: int = 2) -> None:
        super().__init__(_one_line(message))
        if command is None:
            command = command_name(click.get_current_context(silent=True))
        elif not command.startswith(PROG):
            command = f"{PROG} {command}"
        self.command = command
        self.exit_code = code

    def format_message(self) -> str:
        return f"{self.command}: error: {self.message}"

    def show(self, file=None) -> None:
        click.echo(self.format_message(), err=True, file=file)


def fail(message: str, command: str | None = None, code: int = 2):
    """Stop the current command with one error line (see :class:`CommandError`); never returns.

    ``command``: ``"tune"``, ``"db show"``, ...; default the command being run.
    """
    raise CommandError(message, command, code)


class AliasedOption(click.Option):
    """An option whose old spellings still parse but are not shown (``--help``, error hints).

    ``@click.option("--m-buckets", "m_values", cls=AliasedOption, aliases=("--m",), ...)``.
    """

    def __init__(self, param_decls=None, aliases: tuple[str, ...] = (), **kwargs) -> None:
        super().__init__([*(param_decls or ()), *aliases], **kwargs)
        self.aliases = tuple(aliases)

    def _visible(self) -> list[str]:
        return [name for name in self.opts if name not in self.aliases]

    def get_help_record(self, ctx):
        opts = self.opts
        self.opts = self._visible()
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts

    def get_error_hint(self, ctx) -> str:
        return " / ".join(f"'{name}'" for name in self._visible())


class Group(click.Group):
    """A click group whose usage errors follow the one-line convention (see the module doc)."""

    group_class = type  # subgroups (``ss1bench db``) are of this class too

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:
            raise CommandError(error.format_message(), command_name(error.ctx or ctx), error.exit_code) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CommandError:
            raise
        except click.UsageError as error:  # a subcommand's parse error or a BadParameter it raised
            raise CommandError(error.format_message(), command_name(error.ctx or ctx), error.exit_code) from None


@click.group(name=PROG, cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
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
    from .tuning.gpu import normalize_gpu_name
    from .tuning.lookup import DATABASE

    for index in range(torch.cuda.device_count()):
        name = torch.cuda.get_device_name(index)
        click.echo(f"cuda:{index}: {name}; tuning database: {DATABASE.serving(normalize_gpu_name(name)).describe()}")


# Commands from other modules register here (one line each).
from .bench import commands as _bench_commands  # noqa: E402, F401  (registers bench, report)
from .e2e.command import e2e_command  # noqa: E402  (a command object: e2e imports nothing from this module)
from .tuning import commands as _tuning_commands  # noqa: E402, F401  (registers tune)
from .tuning import db_commands as _db_commands  # noqa: E402, F401  (registers db)

main.add_command(e2e_command)
