"""``python -m caldavfs``."""

from caldavfs.cli import run

run()
