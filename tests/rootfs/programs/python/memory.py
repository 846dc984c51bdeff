# Holds 1 GiB of distinct, touched memory, far above the run's limit.
chunks = []
for _ in range(1024):
    chunks.append(bytearray(b"x" * (1 << 20)))
print("allocated", len(chunks), "MiB")
