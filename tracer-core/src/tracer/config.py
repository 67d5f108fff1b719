"""`TracerConfig`: every setting of a run, validated once at `tracer.init`.

Validation happens here, at the call site, so that misuse fails before training starts:
an unknown keyword names the closest valid one, a bad value names its field.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import urllib.parse
from collections.abc import Iterator
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tracer.records import SEVERITIES

logger = logging.getLogger(__name__)

STORAGE_PATH_ENV = "TRACER_STORAGE_PATH"
DEFAULT_STORAGE_PATH = "./.tracer"
WEBHOOK_URL_ENV = "TRACER_WEBHOOK_URL"
DASHBOARD_URL_ENV = "TRACER_DASHBOARD_URL"
# Settings that may hold a secret (a webhook's path is its password; a dashboard URL may carry
# its token): never stored with the run, logged, shown in a repr or in a validation error, and
# left out of what adapters save in framework checkpoints.
SECRET_SETTINGS = frozenset({"webhook_url", "dashboard_url"})

# Settings accepted for compatibility that change nothing in this design, with the reason.
# Setting one to a non-default value warns, so no setting is silently dead.
INERT_SETTINGS: dict[str, tuple[Any, str]] = {
    "max_workers": (
        4,
        "Tracer writes through one background writer thread per run, not a worker pool",
    ),
}


def default_storage_path() -> str:
    """Where runs are stored when no storage_path is given: TRACER_STORAGE_PATH, else
    ./.tracer (also where readers look by default)."""
    return os.environ.get(STORAGE_PATH_ENV) or DEFAULT_STORAGE_PATH


def _webhook_url_from_env() -> Optional[str]:
    return os.environ.get(WEBHOOK_URL_ENV, "").strip() or None


def _dashboard_url_from_env() -> Optional[str]:
    return os.environ.get(DASHBOARD_URL_ENV, "").strip() or None


_PASSWORD_PARAMETER = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)
PASSWORD_MASK = "***"


def mask_password(location: str) -> str:
    """`location` as it may be shown: the password of a URL (`user:secret@host`) and any
    `password=...` parameter replaced by ***. A storage URL may carry a database password
    (team storage); every message, repr and log line that names a location shows it so."""
    parts = urllib.parse.urlsplit(location) if "://" in location else None
    if parts is not None and parts.password is not None:
        userinfo, host = parts.netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        location = urllib.parse.urlunsplit(
            (parts.scheme, f"{user}:{PASSWORD_MASK}@{host}", parts.path, parts.query,
             parts.fragment)
        )  # fmt: skip
    return _PASSWORD_PARAMETER.sub(lambda match: match.group(1) + PASSWORD_MASK, location)


class TracerConfig(BaseModel):
    """Configuration of one training run (see the table in README for what each field does).

    `project=` is accepted as an alias of `project_name`, matching `tracer.init(project=...)`.
    """

    # Errors name the field and the rule, never the value: a value may be a secret (see
    # SECRET_SETTINGS), and an error about any field shows the whole input otherwise.
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, frozen=False, hide_input_in_errors=True
    )

    def __repr_args__(self) -> Iterator[tuple[Optional[str], Any]]:
        """The repr (and str) of a config never shows a password in `storage_path`."""
        for name, value in super().__repr_args__():
            if name == "storage_path" and isinstance(value, str):
                value = mask_password(value)
            yield name, value

    # Project metadata
    project_name: str = Field(min_length=1)
    run_name: Optional[str] = None
    tags: list[str] = Field(default_factory=list)
    notes: Optional[str] = None
    config: dict[str, Any] = Field(
        default_factory=dict, description="Hyperparameters of the run, stored with it."
    )

    # Storage
    storage_path: str = Field(default_factory=default_storage_path)
    retention_days: int = Field(
        default=30,
        ge=0,
        description="Ended runs of the project older than this are deleted at init; 0 keeps all.",
    )

    # Capture settings
    checkpoint_interval: int = Field(default=1000, gt=0)
    capture_samples: int = Field(default=5, ge=0)
    track_gradients: bool = True
    track_system_metrics: bool = True
    system_metrics_interval: float = Field(
        default=5.0, gt=0, description="Seconds between samples of the system sampler thread."
    )

    # Gradient tracking
    gradient_layers: Optional[list[str]] = None
    fused_gradient_kernel: bool = Field(
        default=False,
        description="Per-step gradient norms from one Triton kernel that reads each gradient"
        " once, instead of torch's two foreach passes (CUDA gradients; needs triton, falls back"
        " to foreach with one warning). Opt-in until verified on a GPU (no host sync, the"
        " foreach path's values, no illegal address); then the default on CUDA where faster.",
    )

    # Silent training bugs (capture/gradients/probe.py, detection/silent.py; README "What
    # Tracer checks for silent bugs"): what an optimizer step changed, sampled every N steps.
    update_check_interval: int = Field(
        default=10,
        ge=0,
        description="Optimizer steps between two samples of the update size per layer, the"
        " param groups' lrs, the training flag and the batch fingerprint (needs"
        " watch(model, optimizer=...)); 0 turns the probe off.",
    )
    capture_warnings: bool = Field(
        default=True,
        description="Record the Python warnings that signal a silent bug (a loss whose"
        " target broadcasts, a scheduler stepped before the optimizer) as run events.",
    )

    # Replicas of a distributed job (capture/gradients/replicas.py, detection/replicas.py):
    # each rank fingerprints its weights now and then, rank 0 compares them.
    rank_weight_check_interval: int = Field(
        default=50,
        ge=0,
        description="Optimizer steps between two fingerprints of each rank's weights in a"
        " distributed job (world size > 1), compared across ranks by the replica_divergence"
        " detector; 0 turns them off.",
    )

    # Performance
    async_writes: bool = True
    write_buffer_size: int = Field(default=100, gt=0)
    max_workers: int = Field(default=4, gt=0)

    # Detection (not in the seed reference)
    detectors: dict[str, Any] = Field(
        default_factory=dict,
        description="Per detector: False to disable it, or a dict of its settings.",
    )
    loss_metrics: list[str] = Field(
        default_factory=lambda: ["*loss*"],
        description="fnmatch patterns (case-insensitive) of the metrics loss detectors watch.",
    )
    halt_on: list[str] = Field(
        default_factory=list,
        description="Anomaly types that stop training: tracer.step() raises TrainingHalted.",
    )

    # Notifications (webhook; tracer.actions.webhook): one JSON POST per anomaly episode at or
    # above webhook_min_severity, sent from a thread of its own, never blocking a step.
    # Off unless a URL is set here or in TRACER_WEBHOOK_URL (read when the config is made;
    # an explicit None turns it off). The URLs are secrets: repr=False, never stored.
    webhook_url: Optional[str] = Field(
        default_factory=_webhook_url_from_env,
        repr=False,
        validate_default=True,
        description="Where anomaly notifications are POSTed (Slack, Discord or any JSON"
        " receiver); default: $TRACER_WEBHOOK_URL, else off. Never stored or logged.",
    )
    webhook_min_severity: str = Field(
        default="warning",
        description="The least severity notified: info, warning or critical.",
    )
    webhook_max_per_minute: int = Field(
        default=10,
        gt=0,
        description="Notifications sent in any 60 s at most; more are counted, named in the"
        " next message and summarised at finish.",
    )
    dashboard_url: Optional[str] = Field(
        default_factory=_dashboard_url_from_env,
        repr=False,
        validate_default=True,
        description="Where `tracer ui` serves this store (e.g. http://host:8080/?token=...);"
        " notifications link the run there. Default: $TRACER_DASHBOARD_URL, else no link.",
    )

    # Skipping a non-finite optimizer step (capture/gradients/skipping.py; README "Acting on
    # anomalies"): opt-in, since the decision reads one flag back per optimizer step (a host
    # sync) and, in a distributed job, adds one scalar all-reduce.
    on_nonfinite: Literal["record", "skip"] = Field(
        default="record",
        description='"record": a non-finite gradient is stored and detected, training goes on'
        ' as it would without Tracer. "skip": the optimizer step whose gradients hold a NaN or'
        " Inf is skipped (gradients cleared), decided on all ranks together; needs"
        " track_gradients and watch(model, optimizer=...) or an adapter.",
    )
    max_consecutive_skips: int = Field(
        default=10,
        ge=1,
        description='With on_nonfinite="skip": after this many skipped steps in a row, training'
        " stops with TrainingHalted (a run that only produces NaN is not trained forever).",
    )

    # Keeping the last healthy checkpoint (tracer.actions.pinning; README "Acting on
    # anomalies"). Off by default: like every action but storing the anomaly, it is opt-in.
    pin_checkpoints: bool = Field(
        default=False,
        description="When an anomaly of severity pin_on or above opens, hard-link the last model"
        " save recorded before its onset into <storage>/pinned/<run id>/, where checkpoint"
        " rotation cannot delete it (copied where a link is impossible).",
    )
    pin_on: str = Field(
        default="critical",
        description="The least severity (info, warning, critical) of an anomaly whose opening"
        " pins the last healthy checkpoint.",
    )

    # Lifecycle (not in the seed reference; needed by preempted jobs and crash detection)
    resume: Optional[str] = Field(
        default=None, description="Id or name of an existing run of the project to continue."
    )
    run_id: Optional[str] = Field(
        default=None,
        description="The id a new run gets (an adapter that must name the run before it starts,"
        " e.g. Lightning's logger version); generated when None. Taken ids are refused.",
    )
    flush_interval: float = Field(
        default=1.0, gt=0, le=60, description="Seconds between background flushes at most."
    )
    heartbeat_interval: float = Field(
        default=10.0, gt=0, description="Seconds between heartbeats that mark the run alive."
    )
    max_backlog_mb: float = Field(
        default=64.0,
        gt=0,
        description="Memory for data waiting to be written when storage fails or hangs: half"
        " for closed steps, half for batches storage has not accepted. Past it, data is dropped"
        " (oldest batches first; new steps while a write hangs), counted, and told at finish.",
    )

    @model_validator(mode="before")
    @classmethod
    def _accept_project_alias_and_name_typos(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "project" in data:
            if "project_name" in data:
                raise ValueError("pass either project or project_name, not both")
            data = dict(data)
            data["project_name"] = data.pop("project")
        valid = list(cls.model_fields)
        for key in data:
            if key not in cls.model_fields:
                close = difflib.get_close_matches(str(key), [*valid, "project"], n=1, cutoff=0.5)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown Tracer setting {key!r}{hint}")
        return data

    @field_validator("project_name")
    @classmethod
    def _project_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("project_name must not be blank")
        return value

    @field_validator("run_name", "resume", "run_id")
    @classmethod
    def _name_not_blank(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.strip():
            raise ValueError("must not be blank (pass None to auto-generate)")
        return value

    @field_validator("storage_path")
    @classmethod
    def _storage_path_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("storage_path must not be blank")
        return value

    @field_validator("webhook_url", "dashboard_url")
    @classmethod
    def _http_url(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        try:
            parts = urllib.parse.urlsplit(value.strip())
            valid = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        except ValueError:  # a malformed host; the parser's message would show the URL
            valid = False
        if not valid:
            raise ValueError(
                "must be an http:// or https:// URL with a host (the value is not shown: it"
                " may be a secret)"
            )
        return value.strip()

    @field_validator("webhook_min_severity", "pin_on")
    @classmethod
    def _known_severity(cls, value: str) -> str:
        if value not in SEVERITIES:
            raise ValueError(f"must be one of {', '.join(SEVERITIES)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _skip_needs_gradient_tracking(self) -> TracerConfig:
        if self.on_nonfinite == "skip" and not self.track_gradients:
            raise ValueError(
                'on_nonfinite="skip" needs track_gradients=True: the decision is taken where'
                " the gradients are captured"
            )
        return self

    @model_validator(mode="after")
    def _warn_inert_settings(self) -> TracerConfig:
        for name, (default, reason) in INERT_SETTINGS.items():
            if getattr(self, name) != default:
                logger.warning("Tracer setting %s has no effect: %s.", name, reason)
        return self
