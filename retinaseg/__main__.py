from retinaseg.cli import cli

cli()
