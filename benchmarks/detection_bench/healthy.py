"""The healthy runs: real trainings under every common schedule, and long synthetic losses.

Every shown anomaly on one of these is a false alarm. Declared in pairs of one schedule kind,
so the tune / held alternation puts each kind in both halves.
"""

from __future__ import annotations

from .scenarios import HEALTHY, HEALTHY_LONG, Scenario


def healthy() -> list[Scenario]:
    """Healthy real trainings, declared in pairs of one schedule kind."""
    h = HEALTHY
    return [
        Scenario("h_constant_adam_mlp", h, steps=800),
        Scenario(
            "h_constant_sgdm_regression",
            h,
            model="regression",
            optimizer="sgd_momentum",
            lr=0.01,
            batch_size=8,
            steps=1000,
        ),
        Scenario(
            "h_step_sgdm_cnn",
            h,
            model="cnn",
            optimizer="sgd_momentum",
            lr=0.02,
            schedule="step",
            steps=900,
        ),
        Scenario(
            "h_step_sgd_mlp_b128",
            h,
            optimizer="sgd",
            lr=0.1,
            schedule="step",
            batch_size=128,
            steps=1200,
        ),
        Scenario(
            "h_cosine_adamw_transformer",
            h,
            model="transformer",
            optimizer="adamw",
            lr=2e-3,
            schedule="warmup_cosine",
            steps=1200,
        ),
        Scenario(
            "h_cosine_adam_regression_b4",
            h,
            model="regression",
            schedule="warmup_cosine",
            batch_size=4,
            steps=1000,
        ),
        Scenario(
            "h_onecycle_adamw_mlp_b256",
            h,
            optimizer="adamw",
            lr=3e-3,
            schedule="onecycle",
            batch_size=256,
            steps=600,
        ),
        Scenario(
            "h_onecycle_adam_cnn_b8",
            h,
            model="cnn",
            lr=2e-3,
            schedule="onecycle",
            batch_size=8,
            steps=800,
        ),
        Scenario(
            "h_linear_sgd_regression",
            h,
            model="regression",
            optimizer="sgd",
            lr=0.05,
            schedule="linear",
            steps=1000,
        ),
        Scenario(
            "h_linear_adam_transformer_b128",
            h,
            model="transformer",
            lr=2e-3,
            schedule="linear",
            batch_size=128,
            steps=900,
        ),
        Scenario(
            "h_cyclic_sgdm_mlp_b8",
            h,
            optimizer="sgd_momentum",
            lr=0.02,
            schedule="cyclic",
            batch_size=8,
            steps=1500,
        ),
        Scenario(
            "h_cyclic_adamw_regression_b256",
            h,
            model="regression",
            optimizer="adamw",
            lr=3e-3,
            schedule="cyclic",
            batch_size=256,
            steps=700,
        ),
    ]


def healthy_long() -> list[Scenario]:
    """Long healthy runs of a synthetic loss through the real tracer API (no model)."""
    return [
        Scenario(
            "long_decay", HEALTHY_LONG, steps=200_000, synthetic=True, shape="decay", sigma=0.3
        ),
        Scenario(
            "long_step_drops",
            HEALTHY_LONG,
            steps=200_000,
            synthetic=True,
            shape="step_drops",
            sigma=0.2,
        ),
        Scenario(
            "long_flat_half",
            HEALTHY_LONG,
            steps=200_000,
            synthetic=True,
            shape="flat_half",
            sigma=0.1,
        ),
    ]
