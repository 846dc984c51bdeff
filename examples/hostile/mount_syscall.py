# Tries to mount a filesystem: the seccomp filter kills it (syscall_blocked, naming the call).
import ctypes
ctypes.CDLL(None).mount(b"none", b"/tmp", b"tmpfs", 0, None)
