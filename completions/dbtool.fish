# Generated from the dbtool command registry by `python -m dbtool.cli.docgen`; do not edit.
complete --command dbtool --no-files --arguments "(env _DBTOOL_COMPLETE=complete_fish _TYPER_COMPLETE_FISH_ACTION=get-args _TYPER_COMPLETE_ARGS=(commandline -cp) dbtool)" --condition "env _DBTOOL_COMPLETE=complete_fish _TYPER_COMPLETE_FISH_ACTION=is-args _TYPER_COMPLETE_ARGS=(commandline -cp) dbtool"
