"""PySide6-Essentials 6.12.0 drops a reference to None on every void-returning call and aborts
Python 3.11 after a few thousand calls (DESIGN.md section 8). This canary catches that build."""

import sys

import pytest


def test_void_qt_calls_keep_none_refcount():
    QtCore = pytest.importorskip("PySide6.QtCore")
    obj = QtCore.QObject()
    for _ in range(100):  # warm up caches
        obj.setObjectName("x")
    before = sys.getrefcount(None)
    for _ in range(5000):
        obj.setObjectName("canary")
    after = sys.getrefcount(None)
    assert abs(after - before) < 100, f"None lost {before - after} references: broken PySide6 build"
