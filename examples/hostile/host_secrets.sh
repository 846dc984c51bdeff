# Looks for the host: its password file, home directories, processes and network.
cat /etc/shadow 2>&1 | head -1
ls /root /home 2>&1 | head -2
echo "processes visible: $(ls /proc | grep -c '^[0-9]')"
echo "network interfaces: $(ls /sys/class/net 2>&1)"
(exec 3<>/dev/tcp/127.0.0.1/22) 2>&1 | head -1
