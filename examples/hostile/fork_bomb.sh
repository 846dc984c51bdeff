# The classic: contained by the process limit; the run ends at its wall time.
bomb() { bomb | bomb & }
bomb
sleep 2
