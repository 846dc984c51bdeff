# Writes without end: stopped at max_output_bytes, with what came before kept.
while True:
    print("flood " * 100)
