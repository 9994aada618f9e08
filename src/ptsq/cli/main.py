"""Entry point: the ``ptsq`` app, one module per command."""

from __future__ import annotations

import os

# PyTorch's C++ deprecation notices for quantized tensors would bury ptsq's own output
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")

import typer

from ptsq.cli._group import Commands

app = typer.Typer(
    name="ptsq",
    cls=Commands,
    help="Quantize PyTorch models to int8 for CPU inference, and prove the result against fp32.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: examples printed verbatim (see ptsq.cli._group)
    context_settings={"max_content_width": 120},  # wide terminals get option help on fewer lines
)


# commands listed first keep this order in --help; any other ptsq/cli/<name>.py with register() follows
ORDER = ("quantize", "bench", "eval", "analyze", "info")


def _register() -> None:
    import importlib
    import pkgutil

    import ptsq.cli as pkg

    names = [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_") and m.name != "main"]
    for name in sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        module = importlib.import_module(f"ptsq.cli.{name}")
        if hasattr(module, "register"):
            module.register(app)


_register()


def main() -> None:
    app(prog_name="ptsq")


if __name__ == "__main__":
    main()
