"""``python -m evorec ...`` (and ``torchrun --nproc_per_node N -m evorec train ...``): the CLI."""

from evorec.cli.main import app

app(prog_name="evorec")
