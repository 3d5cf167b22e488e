"""The system's libcrypto (OpenSSL) through ctypes, found once: `storesync.loadable` asks it
whether OpenSSL loads a certificate, `storesync.pbe` derives PKCS#12 keys and runs AES with it.

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
