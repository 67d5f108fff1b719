"""`python -m tracer.cli`, the same as the `tracer` command."""

from tracer.cli import main

main()
