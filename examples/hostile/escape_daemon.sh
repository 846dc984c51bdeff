# Leaves a daemon behind (setsid + double fork): it dies with the sandbox all the same.
setsid bash -c 'sleep 600 &' &
echo "left a sleeper behind; the sandbox will take it down"
