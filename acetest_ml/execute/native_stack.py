"""Native stack frames for crash signatures.

Two segfaults in different kernels both end with "Fatal Python error:
Segmentation fault"; what tells them apart is where in native code they
happened. Python 3.11's faulthandler prints only Python frames, and neither
framework prints native frames for a SIGSEGV, so the worker installs a small
fatal-signal handler of its own (``install``): it writes the native stack
with glibc's ``backtrace_symbols_fd`` between two marker lines on stderr,
puts the previous handler (faulthandler's) back and re-raises the signal, so
faulthandler still prints its report and the worker still dies of the same
signal. The handler is a ctypes callback; it allocates nothing in C
(``backtrace`` is loaded once at install time) and only runs on a signal that
kills the worker anyway.

The supervisor reads the frames back (``top_frames``): the frames after the
signal trampoline, without libc / libstdc++ / libgcc (abort, raise,
terminate), up to the interpreter. A frame is ``library:function`` (the C++
name without arguments) or, for a frame without an exported symbol,
``library+0xOFFSET``: the offset inside the library is the same in every run
of the same build (the absolute address, which ASLR moves, is dropped).
When no such block is there, TensorFlow's own "Check failure stack trace"
lines (``@ 0xADDR symbol``) are used instead.
"""
from __future__ import annotations

import os
import re
import signal
import sys

BEGIN = "--- acetest-ml native stack ---"
END = "--- acetest-ml end native stack ---"
FATAL_SIGNALS = ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT")
MAX_FRAMES = 64

_installed: dict = {}


def install() -> bool:
    """Install the native-stack handler for the fatal signals (after
    faulthandler.enable, whose handlers it chains to). Linux/glibc only;
    returns False (and changes nothing) elsewhere."""
    if _installed or not sys.platform.startswith("linux"):
        return bool(_installed)
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        backtrace = libc.backtrace
        symbols_fd = libc.backtrace_symbols_fd
        sigaction = libc.sigaction
        raise_ = libc["raise"]
    except (OSError, AttributeError):
        return False

    class SigAction(ctypes.Structure):  # struct sigaction of glibc (x86_64, aarch64)
        _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16),
                    ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]

    backtrace.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
    symbols_fd.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    sigaction.argtypes = [ctypes.c_int, ctypes.POINTER(SigAction), ctypes.POINTER(SigAction)]
    buf = (ctypes.c_void_p * MAX_FRAMES)()
    backtrace(buf, MAX_FRAMES)  # loads libgcc_s now, not inside the handler
    previous: dict[int, SigAction] = {}
    begin, end = (BEGIN + "\n").encode(), (END + "\n").encode()

    def handler(signum: int) -> None:
        try:
            os.write(2, begin)
            symbols_fd(buf, backtrace(buf, MAX_FRAMES), 2)
            os.write(2, end)
        finally:
            # back to faulthandler's handler; the re-raised signal is delivered
            # when this returns (it is blocked while its handler runs)
            sigaction(signum, ctypes.byref(previous[signum]), None)
            raise_(signum)

    callback = ctypes.CFUNCTYPE(None, ctypes.c_int)(handler)
    sa_onstack = 0x08000000
    for name in FATAL_SIGNALS:
        num = int(getattr(signal, name))
        old = SigAction()
        new = SigAction()
        new.handler = ctypes.cast(callback, ctypes.c_void_p).value
        new.flags = sa_onstack  # use faulthandler's alternate stack (stack overflows)
        if sigaction(num, ctypes.byref(new), ctypes.byref(old)) == 0:
            previous[num] = old
    _installed.update(callback=callback, buf=buf, previous=previous, libc=libc)
    return True


# --------------------------------------------------------------------------
# reading frames back

# backtrace_symbols_fd: "/path/lib.so(symbol+0x1a)[0x7f..]", "/path/lib.so(+0x1a)[0x7f..]"
_GLIBC_FRAME = re.compile(r"^(?P<obj>[^()\[\]]*)(?:\((?P<sym>[^()+]*)(?:\+(?P<off>0x[0-9a-fA-F]+))?\))?"
                          r"\s*\[(?P<addr>0x[0-9a-fA-F]+)\]$")
# TensorFlow / absl: "    @     0x7f8f954ce564  absl::...::LogMessage::SendToLog()"
_ABSL_FRAME = re.compile(r"^@\s+0x[0-9a-fA-F]+\s+(?:\d+\s+)?(?P<sym>.+?)\s*$")
_RUNTIME_OBJECTS = re.compile(r"^(libc|libstdc\+\+|libgcc_s|libpthread|ld-linux[^.]*|libffi)\.so")
_INTERPRETER = re.compile(r"^(libpython[\d.]*\.so|python[\d.]*$|_ctypes\.)")
_ABSL_LOGGING = re.compile(r"(log_internal|LogMessage|absl::.*Log|tsl::internal::Log|"
                           r"^raise$|^abort$|^__pthread_kill)")


def demangle(sym: str) -> str:
    """The qualified name of an Itanium-mangled C++ symbol, without its
    arguments or template arguments (``_ZN2at6native3fooERKNS_6TensorE`` ->
    ``at::native::foo``); other symbols come back unchanged."""
    if sym.startswith("_ZN"):
        i, parts = 3, []
        while i < len(sym):
            c = sym[i]
            if c in "KVrL":
                i += 1
            elif sym.startswith("St", i):
                parts.append("std")
                i += 2
            elif c == "B":  # abi tag: B <len> <tag>
                m = re.match(r"B(\d+)", sym[i:])
                if not m:
                    break
                i += len(m.group(0)) + int(m.group(1))
            elif c.isdigit():
                m = re.match(r"\d+", sym[i:])
                assert m is not None  # sym[i] is a digit
                n = int(m.group(0))
                i += len(m.group(0))
                parts.append(sym[i:i + n])
                i += n
            elif c in "CD" and i + 1 < len(sym) and sym[i + 1].isdigit():
                parts.append(("~" if c == "D" else "") + (parts[-1] if parts else "?"))
                i += 2
            else:  # E (end), I (template args), S_ substitutions...: stop
                break
        return "::".join(parts) if parts else sym
    m = re.match(r"_Z(\d+)", sym)
    if m:
        n = int(m.group(1))
        return sym[len(m.group(0)):len(m.group(0)) + n]
    return sym


def _glibc_frames(lines: list[str]) -> list[str]:
    frames: list[str] = []
    past_trampoline = False
    for line in lines:
        m = _GLIBC_FRAME.match(line.strip())
        if not m:
            continue
        obj = os.path.basename(m.group("obj") or "?")
        if not past_trampoline:
            # the handler's own frames (libffi, ctypes, the interpreter) come
            # first; the signal trampoline is the first libc frame
            past_trampoline = obj.startswith("libc.so")
            continue
        if _RUNTIME_OBJECTS.match(obj):
            continue
        if _INTERPRETER.match(obj):
            break
        sym = (m.group("sym") or "").strip()
        frames.append(f"{obj}:{demangle(sym)}" if sym else f"{obj}+{m.group('off') or '0x?'}")
    return frames


def _absl_frames(lines: list[str]) -> list[str]:
    frames = []
    for line in lines:
        m = _ABSL_FRAME.match(line.strip())
        if not m:
            continue
        sym = re.sub(r"\(.*\)$", "", m.group("sym")).strip()
        sym = re.sub(r"<.*>", "<>", sym)
        if sym in ("(unknown)", "") or _ABSL_LOGGING.search(sym):
            continue
        if sym.startswith(("pybind11::", "TFE_Py", "cfunction_call", "_PyEval", "PyObject_")):
            break
        frames.append(sym)
    return frames


def top_frames(stderr_text: str, n: int = 3) -> list[str]:
    """The first ``n`` native frames of a worker's crash output (see the
    module docstring); [] when it printed none."""
    start = stderr_text.rfind(BEGIN)
    if start >= 0:
        stop = stderr_text.find(END, start)
        block = stderr_text[start + len(BEGIN):stop if stop >= 0 else None]
        frames = _glibc_frames(block.splitlines())
        if frames:
            return frames[:n]
    i = stderr_text.find("*** Check failure stack trace: ***")
    if i >= 0:
        return _absl_frames(stderr_text[i:].splitlines()[1:])[:n]
    return []
