"""Entry point: the ``ptsq`` app, one module per command."""

from __future__ import annotations

import os

# PyTorch's C++ deprecation notices for quantized tensors would bury ptsq's own output
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")

import typer

app = typer.Typer(
    name="ptsq",
    help="Quantize PyTorch models to int8 for CPU inference, and prove the result against fp32.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    from ptsq.cli import bench, info, quantize

    for mod in (quantize, bench, info):
        mod.register(app)


_register()


def main() -> None:
    app(prog_name="ptsq")


if __name__ == "__main__":
    main()
