# Asks for 1 GiB at once, far above the run's limit: dd allocates a 1 GiB buffer and one
# read from /dev/zero fills it. (A pipe through `tail -c` gets there too, but copying the
# bytes costs more CPU than the 2 s limit on a slow machine, so the run can end with
# time_limit first; growing a bash variable is slower still.)
exec dd if=/dev/zero of=/dev/null bs=1G count=1 status=none
