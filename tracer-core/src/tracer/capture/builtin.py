"""The collectors that ship with tracer-core, by name: gradients, system metrics, batch
samples, the step-cadence memory probe and the warnings that signal silent bugs; registered
by `tracer.plugins.builtins`."""

from __future__ import annotations

from tracer.capture.collector import CollectorFactory
from tracer.capture.gradients.collector import gradient_collector
from tracer.capture.memory_probe import memory_probe
from tracer.capture.samples import sample_collector
from tracer.capture.system import system_collector
from tracer.capture.warnings import warning_collector

BUILTIN_COLLECTORS: dict[str, CollectorFactory] = {
    "gradients": gradient_collector,
    "system": system_collector,
    "samples": sample_collector,
    "memory_probe": memory_probe,
    "warnings": warning_collector,
}
