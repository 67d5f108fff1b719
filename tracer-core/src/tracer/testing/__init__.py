"""Conformance suites that third-party plugins subclass to prove they behave like the built-ins.

    from tracer.testing import DetectorConformance, StorageConformance

    class TestMyStorage(StorageConformance):
        def make_storage(self, location):
            return MyStorage(TracerConfig(project_name="t", storage_path=f"my://{location}"))

    class TestMyDetector(DetectorConformance):
        detector_class = MyDetector

        def fault_stream(self):
            return DetectorStream(series={"my_metric": (steps, values_with_the_fault)})

Needs pytest (not a dependency of tracer-core): `pip install pytest`.
"""

from __future__ import annotations

from tracer.testing.detector_streams import DetectorStream, make_checkpoint, make_event
from tracer.testing.detector_suite import DetectorConformance
from tracer.testing.storage_suite import StorageConformance

__all__ = [
    "DetectorConformance",
    "DetectorStream",
    "StorageConformance",
    "make_checkpoint",
    "make_event",
]
