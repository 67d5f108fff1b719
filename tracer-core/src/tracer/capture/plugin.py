"""Registers the built-in collectors: gradients, system metrics, batch samples and the
step-cadence memory probe."""

from __future__ import annotations

from tracer.capture.gradient_capture import gradient_collector
from tracer.capture.memory_probe import memory_probe
from tracer.capture.samples import sample_collector
from tracer.capture.system import system_collector
from tracer.plugins.hookspecs import RegisterCollector, hookimpl


@hookimpl
def tracer_register_collectors(register: RegisterCollector) -> None:
    register("gradients", gradient_collector)
    register("system", system_collector)
    register("samples", sample_collector)
    register("memory_probe", memory_probe)
