"""The `danlu` subcommands, grouped by stage; `danlu.cli` builds the parser."""
