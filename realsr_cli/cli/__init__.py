"""The `realsr` command group: lazy-loaded subcommands and the one place where `RealSRError`s become messages and
exit codes. Each subcommand lives in its own module here and stays thin; what they print alike is in `_console`.

No torch here: `realsr --help` and ONNX upscaling never import it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import signal

import rich_click as click
from rich.markup import escape

from realsr_cli import __version__
from realsr_cli.cli._console import console, route_warnings
from realsr_cli.errors import EXIT_INTERRUPTED, EXIT_SOME_FAILED, INTERRUPT_SIGNALS, RealSRError

# subcommand -> "module:attribute", imported only when that subcommand runs (hatch/click LazyGroup style)
COMMANDS = {
    "upscale": "realsr_cli.cli.upscale:upscale",
    "export": "realsr_cli.cli.export:export",
    "train": "realsr_cli.cli.train:train",
    "eval": "realsr_cli.cli.eval:eval_command",
    "compare": "realsr_cli.cli.compare:compare_command",
    "bench": "realsr_cli.cli.bench:bench_command",
    "degrade": "realsr_cli.cli.degrade:degrade_command",
    "models": "realsr_cli.cli.models:models_command",
    "quantize": "realsr_cli.cli.quantize:quantize_command",
}

EPILOG = f"""Exit codes: 0 success; 1 error; 2 bad usage or config; 3 bad input (image, checkpoint, folder) or
unwritable output (full disk); 4 model error; 5 backend error; {EXIT_SOME_FAILED} some inputs of a batch failed;
{EXIT_INTERRUPTED} interrupted (Ctrl-C, SIGTERM, SIGHUP).
Set REALSR_DEBUG=1 for a full traceback."""


class RealSRGroup(click.RichGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._available(name))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not self._available(cmd_name):
            return None
        module_name, attr = COMMANDS[cmd_name].split(":")
        return getattr(importlib.import_module(module_name), attr)

    @staticmethod
    def _available(name: str) -> bool:
        module_name = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module_name) is not None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RealSRError as err:
            if os.environ.get("REALSR_DEBUG"):
                raise
            console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
                console.print("[yellow]interrupted[/]")
            ctx.exit(EXIT_INTERRUPTED)


# the subcommands inherit the context settings: -h works everywhere
@click.group(cls=RealSRGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="realsr")
def cli() -> None:
    """Upscale real-world photos x4, export models, and train them on your own unpaired photos.

    `realsr COMMAND --help` shows a command's options and examples.

    \b
    Examples:
      realsr upscale photo.jpg                  photo_x4.jpg beside it
      realsr upscale photos/ -r -o out/ --json  a folder tree, one JSON line each
      realsr eval --lr data/lr --hr data/hr     the model against bicubic
    """
    route_warnings()


def main() -> None:
    interrupt_on_signals()
    cli(prog_name="realsr")


def interrupt_on_signals() -> None:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, as SIGINT does: temporary files are removed, a training run saves
    at its next step, and the exit code is EXIT_INTERRUPTED. A signal ignored at start (nohup) stays ignored."""
    for sig in INTERRUPT_SIGNALS:
        if sig != signal.SIGINT and signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _interrupt)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
