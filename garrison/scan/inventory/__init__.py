"""Package inventory, one module per ecosystem; `all_detectors()` gives a fresh set for one scan."""

from __future__ import annotations

from garrison.scan.inventory.dpkg import DpkgDetector
from garrison.scan.inventory.golang import GoDetector
from garrison.scan.inventory.interface import Detector
from garrison.scan.inventory.java import JavaDetector
from garrison.scan.inventory.node import NodeDetector, NodeRuntimeDetector
from garrison.scan.inventory.python import PythonDetector
from garrison.scan.inventory.ruby import RubyDetector


def all_detectors() -> list[Detector]:
    return [
        PythonDetector(),
        NodeDetector(),
        NodeRuntimeDetector(),
        RubyDetector(),
        JavaDetector(),
        GoDetector(),
        DpkgDetector(),
    ]


__all__ = ["Detector", "all_detectors"]
