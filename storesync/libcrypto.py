"""The system's libcrypto (OpenSSL) through ctypes, found once: `storesync.loadable` asks it
whether OpenSSL loads a certificate, `storesync.pbe` derives PKCS#12 keys and runs AES with it,
and `name_hash` gives a hashed directory's link names as OpenSSL computes them.

Python's `hashlib` has loaded this library already, so using it costs a ctypes import, where
`cryptography`'s cipher modules cost a fifth of a one-shot PKCS#12 write. Callers fall back
to `cryptography` or Python where there is no libcrypto (a statically linked Python).
"""

from __future__ import annotations

_lib = None


def libcrypto():
    """The library (a `ctypes.CDLL`), or None where none can be loaded."""
    global _lib
    if _lib is None:
        _lib = _load() or False
    return _lib or None


def _load():
    import ctypes

    for name in ("libcrypto.so.3", "libcrypto.3.dylib", None):  # None: ask ctypes.util (it runs ldconfig: slow)
        try:
            if name is None:
                import ctypes.util

                name = ctypes.util.find_library("crypto")
            if name:
                return ctypes.CDLL(name)
        except OSError:
            continue
    return None


_name_hash = None


def name_hash(name_der: bytes) -> str | None:
    """OpenSSL's `X509_NAME_hash` of a DER Name, as the 8 hex digits of a hashed directory's link
    name; None where there is no libcrypto, or it refuses the name (the caller computes it in
    Python then). A third of the Python computation's time, most of it in ctypes' calls."""
    global _name_hash
    if _name_hash is None:
        _name_hash = _name_hasher() or False
    return _name_hash(name_der) if _name_hash else None


def _name_hasher():
    import ctypes

    lib = libcrypto()
    try:
        d2i, free = lib.d2i_X509_NAME, lib.X509_NAME_free
        hash_ex = getattr(lib, "X509_NAME_hash_ex", None)  # OpenSSL 3; 1.1 has X509_NAME_hash
        hash_1 = None if hash_ex is not None else lib.X509_NAME_hash
    except AttributeError:  # no libcrypto (None has none of these), or an unlike one
        return None
    pointer, char_p = ctypes.c_void_p, ctypes.c_char_p
    d2i.restype, d2i.argtypes = pointer, [pointer, ctypes.POINTER(char_p), ctypes.c_long]
    free.restype, free.argtypes = None, [pointer]
    if hash_ex is not None:
        hash_ex.restype, hash_ex.argtypes = ctypes.c_ulong, [pointer, pointer, pointer, ctypes.POINTER(ctypes.c_int)]
    else:
        hash_1.restype, hash_1.argtypes = ctypes.c_ulong, [pointer]
    byref = ctypes.byref

    def compute(name_der: bytes) -> str | None:
        cursor = char_p(name_der)
        name = d2i(None, byref(cursor), len(name_der))
        if not name:
            return None
        try:
            if hash_ex is None:
                return "%08x" % hash_1(name)
            ok = ctypes.c_int(0)  # one per call: the daemon's threads may hash at once
            value = hash_ex(name, None, None, byref(ok))
            return "%08x" % value if ok.value else None  # not canonicalisable (bad UTF-8): Python's answer
        finally:
            free(name)

    return compute
