"""Native stack frames for crash signatures.

Two segfaults in different kernels both end with "Fatal Python error:
Segmentation fault"; what tells them apart is where in native code they
happened. Python 3.11's faulthandler prints only Python frames, and neither
framework prints native frames for a SIGSEGV, so the worker installs a small
fatal-signal handler of its own (``install``, before faulthandler, which
chains to it once it has printed its report). The handler writes the raw
return addresses of the native stack (glibc's ``backtrace``, no
symbolisation: looking up symbols in TensorFlow's ~800 MB libraries from
inside the dying process cost ~150 ms per crash) and the executable mappings
that hold them (from /proc/self/maps) between two marker lines on stderr,
tells the supervisor at once that the worker is dying of that signal (see
``set_notice``: the supervisor need not wait for the kernel to tear down a
process of a few hundred MB), puts the previous handler back and re-raises
the signal, so the worker still dies of it. The handler is a ctypes
callback and only runs on a signal that kills the worker anyway.

The supervisor reads the frames back (``top_frames``) and symbolises them
itself, from the libraries' ELF symbol tables (read once per library): the
frames of the crashing code, without the C runtime (libc, libstdc++,
libgcc, pthread, libffi), the interpreter (libpython, ctypes, faulthandler)
and the framework's logging frames, up to the interpreter. A frame is
``library:function`` (the C++ name without arguments) or, for an address
without a symbol, ``library+0xOFFSET``: the offset inside the library is
the same in every run of the same build (the absolute address, which ASLR
moves, is dropped). Older logs written with ``backtrace_symbols_fd``
(``lib.so(sym+0x1a)[0x7f..]``) are read too; when no block is there,
TensorFlow's own "Check failure stack trace" lines (``@ 0xADDR symbol``) are
used instead.
"""
from __future__ import annotations

import bisect
import mmap
import os
import re
import signal
import struct
import sys
from typing import Callable, Optional

BEGIN = "--- acetest-ml native stack ---"
END = "--- acetest-ml end native stack ---"
FATAL_SIGNALS = ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT")
MAX_FRAMES = 64

_installed: dict = {}
#: what the handler sends the supervisor before the worker dies (``set_notice``)
_notice: dict = {}


def set_notice(fd: int, message: Callable[[int], bytes]) -> None:
    """On a fatal signal, after the stack is written, the handler writes
    ``message(signum)`` to ``fd`` (the worker's reply channel)."""
    _notice["fd"] = fd
    _notice["message"] = message


def _executable_maps(addrs: list[int]) -> list[str]:
    """The /proc/self/maps lines of the executable file mappings that hold
    one of ``addrs``, as ``map START-END OFFSET PATH``."""
    fd = os.open("/proc/self/maps", os.O_RDONLY)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    wanted = sorted(set(addrs))
    out = []
    for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or "x" not in parts[1] or not parts[5].startswith("/"):
            continue
        lo, _, hi = parts[0].partition("-")
        start, end = int(lo, 16), int(hi, 16)
        i = bisect.bisect_left(wanted, start)
        if i < len(wanted) and wanted[i] < end:
            out.append(f"map {parts[0]} {parts[2]} {parts[5]}")
    return out


def install() -> bool:
    """Install the native-stack handler for the fatal signals (before
    faulthandler.enable, which chains to it). Linux/glibc only; returns
    False (and changes nothing) elsewhere."""
    if _installed or not sys.platform.startswith("linux"):
        return bool(_installed)
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        backtrace = libc.backtrace
        sigaction = libc.sigaction
        raise_ = libc["raise"]
    except (OSError, AttributeError):
        return False

    class SigAction(ctypes.Structure):  # struct sigaction of glibc (x86_64, aarch64)
        _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16),
                    ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]

    backtrace.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
    sigaction.argtypes = [ctypes.c_int, ctypes.POINTER(SigAction), ctypes.POINTER(SigAction)]
    buf = (ctypes.c_void_p * MAX_FRAMES)()
    backtrace(buf, MAX_FRAMES)  # loads libgcc_s now, not inside the handler
    previous: dict[int, SigAction] = {}

    def handler(signum: int) -> None:
        try:
            n = backtrace(buf, MAX_FRAMES)
            addrs = [int(buf[i] or 0) for i in range(n)]
            lines = [BEGIN] + [f"@ 0x{a:x}" for a in addrs]
            try:
                lines += _executable_maps(addrs)
            except OSError:
                pass
            lines.append(END)
            os.write(2, ("\n".join(lines) + "\n").encode())
            if _notice:
                os.write(_notice["fd"], _notice["message"](signum))
        finally:
            # back to the previous handler (the default action); the re-raised
            # signal is delivered when this returns (it is blocked while its
            # handler runs)
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
# symbols from ELF files (read by the supervisor, once per library)

class _ElfSymbols:
    """Function symbols of one ELF64 little-endian file (its .symtab, or its
    .dynsym when stripped) and its loadable segments."""

    _SYM = None

    def __init__(self, path: str):
        import numpy as np
        with open(path, "rb") as f:
            self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        mm = self.mm
        if mm[:4] != b"\x7fELF" or mm[4] != 2 or mm[5] != 1:
            raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
        phoff, shoff = struct.unpack_from("<QQ", mm, 32)
        phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", mm, 54)
        self.loads = []
        for i in range(phnum):
            p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from(
                "<IIQQQQ", mm, phoff + i * phentsize)
            if p_type == 1:  # PT_LOAD
                self.loads.append((p_offset, p_vaddr, p_filesz))
        sections = [struct.unpack_from("<IIQQQQII", mm, shoff + i * shentsize)
                    for i in range(shnum)]
        # (name, type, flags, addr, offset, size, link, info)
        table = next((s for s in sections if s[1] == 2), None)  # SHT_SYMTAB
        table = table or next((s for s in sections if s[1] == 11), None)  # SHT_DYNSYM
        dt = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"),
                       ("value", "<u8"), ("size", "<u8")])
        if table is None:
            syms = np.zeros(0, dtype=dt)
            self.strtab = 0
        else:
            syms = np.frombuffer(mm, dtype=dt, count=table[5] // dt.itemsize, offset=table[4])
            self.strtab = sections[table[6]][4]
        kind = syms["info"] & 0xF
        syms = syms[((kind == 2) | (kind == 10)) & (syms["value"] != 0)]  # FUNC, GNU_IFUNC
        order = np.argsort(syms["value"], kind="stable")
        self.values = syms["value"][order]
        self.sizes = syms["size"][order]
        self.names = syms["name"][order]

    def vaddr(self, file_offset: int) -> int:
        for off, vaddr, size in self.loads:
            if off <= file_offset < off + size:
                return file_offset - off + vaddr
        return file_offset

    def symbol(self, vaddr: int) -> Optional[str]:
        import numpy as np
        i = int(np.searchsorted(self.values, vaddr, side="right")) - 1
        if i < 0 or vaddr >= int(self.values[i]) + max(int(self.sizes[i]), 1):
            return None
        start = self.strtab + int(self.names[i])
        stop = self.mm.find(b"\0", start)
        return self.mm[start:stop].decode("ascii", "replace") or None


_ELF_CACHE: dict = {}


def _elf(path: str) -> Optional[_ElfSymbols]:
    try:
        key = (path, os.stat(path).st_mtime_ns)
    except OSError:
        return None
    if key not in _ELF_CACHE:
        try:
            _ELF_CACHE[key] = _ElfSymbols(path)
        except (OSError, ValueError, struct.error):
            _ELF_CACHE[key] = None
    return _ELF_CACHE[key]


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


_RAW_ADDR = re.compile(r"^@ (0x[0-9a-fA-F]+)$")
_RAW_MAP = re.compile(r"^map ([0-9a-fA-F]+)-([0-9a-fA-F]+) ([0-9a-fA-F]+) (/.*)$")
_PY_FRAME = re.compile(r'^File "(?P<file>[^"]+)", line \d+ in (?P<func>\S+)$')


def _raw_frames(lines: list[str]) -> list[str]:
    """Frames of the handler's raw block (``@ 0xADDR`` and ``map`` lines),
    symbolised here from the libraries' symbol tables."""
    addrs, maps = [], []
    for line in lines:
        line = line.strip()
        m = _RAW_ADDR.match(line)
        if m:
            addrs.append(int(m.group(1), 16))
            continue
        m = _RAW_MAP.match(line)
        if m:
            maps.append((int(m.group(1), 16), int(m.group(2), 16), int(m.group(3), 16),
                         m.group(4)))
    maps.sort()
    starts = [m[0] for m in maps]
    frames: list[str] = []
    started = False
    for addr in addrs:
        i = bisect.bisect_right(starts, addr) - 1
        if i < 0 or addr >= maps[i][1]:
            continue  # not in a file mapping (JIT code, the vdso): says nothing stable
        start, _end, offset, path = maps[i]
        obj = os.path.basename(path)
        if _RUNTIME_OBJECTS.match(obj) or _INTERPRETER.match(obj):
            # the handler's own frames, the signal trampolines, faulthandler,
            # abort/raise; the interpreter again once the crashing code is behind
            if started and _INTERPRETER.match(obj):
                break
            continue
        started = True
        elf = _elf(path)
        vaddr = elf.vaddr(addr - start + offset) if elf is not None else addr - start + offset
        # a return address: the call is the byte before it
        sym = elf.symbol(vaddr - 1) if elf is not None else None
        name = demangle(sym) if sym else None
        if name and _ABSL_LOGGING.search(name):
            continue
        frames.append(f"{obj}:{name}" if name else f"{obj}+0x{vaddr:x}")
    return frames


def _python_frames(stderr_text: str) -> list[str]:
    """faulthandler's Python frames (most recent call first) without this
    package's own, as ``file.py:function`` (line numbers dropped)."""
    i = stderr_text.rfind("Stack (most recent call first):")
    if i < 0:
        i = stderr_text.rfind("Current thread 0x")
    if i < 0:
        return []
    frames: list[str] = []
    for line in stderr_text[i:].splitlines()[1:]:
        m = _PY_FRAME.match(line.strip())
        if not m:
            if frames or line.strip().startswith(("Extension modules", "Thread 0x")):
                break
            continue
        if f"{os.sep}acetest_ml{os.sep}" in m.group("file"):
            continue
        frames.append(f"{os.path.basename(m.group('file'))}:{m.group('func')}")
    return frames


def top_frames(stderr_text: str, n: int = 3) -> list[str]:
    """The first ``n`` frames of a worker's crash output that locate it (see
    the module docstring): native frames when the handler printed them,
    TensorFlow's check-failure trace otherwise, faulthandler's Python frames
    as a last resort; [] when there are none."""
    start = stderr_text.rfind(BEGIN)
    if start >= 0:
        stop = stderr_text.find(END, start)
        block = stderr_text[start + len(BEGIN):stop if stop >= 0 else None].splitlines()
        frames = _raw_frames(block) or _glibc_frames(block)
        if frames:
            return frames[:n]
    i = stderr_text.find("*** Check failure stack trace: ***")
    if i >= 0:
        frames = _absl_frames(stderr_text[i:].splitlines()[1:])
        if frames:
            return frames[:n]
    return _python_frames(stderr_text)[:n]
