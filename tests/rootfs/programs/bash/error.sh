echo "about to fail" >&2
no_such_command_here
