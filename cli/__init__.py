"""dbtool's command-line interface: fast binder, Typer app, output formats, local commands."""
