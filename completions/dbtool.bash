# Generated from the dbtool command registry by `python -m dbtool.cli.docgen`; do not edit.
_dbtool_completion() {
    local IFS=$'
'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \
                   COMP_CWORD=$COMP_CWORD \
                   _DBTOOL_COMPLETE=complete_bash $1 ) )
    return 0
}

complete -o default -F _dbtool_completion dbtool
