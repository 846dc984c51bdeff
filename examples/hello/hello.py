import sys
name = sys.stdin.readline().strip() or "world"
print(f"hello, {name}, from Python {sys.version.split()[0]}")
