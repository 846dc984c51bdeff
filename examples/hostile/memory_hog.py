# Touches memory until something gives: ends as memory_limit (the cgroup's OOM killer).
chunks = []
while True:
    chunks.append(bytearray(16 << 20))
