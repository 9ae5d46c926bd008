from mpltool.cli import run

run()
