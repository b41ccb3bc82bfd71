"""Keras' known divergences in rsqrt's derivative (LN.D10): where a backend differentiates rsqrt(v)
(of the variance, or of UnitNormalization's sum of squares) in float32 or the input dtype, out of its
range for large v. known.py lists them in the family's order."""

from __future__ import annotations

import numpy as np

from normconf.vocabulary import (
    HUGE_2X3,
    HUGE_ROW,
    LP_RSQRT_HELD,
    RSQRT_EXAMPLES,
    RSQRT_HELD,
    SMALL_COTANGENT,
    Case,
    Divergence,
    rsqrt_jvp_underflows,
    rsqrt_jvp_underflows_in_float32,
    rsqrt_of_square_sum_underflows,
)

LN_D10: list[Divergence] = [
    *(
        Divergence(
            adapters=name,
            norm=norm,
            clause="LN.D10",
            reason="Keras computes in float32 here, float64 too: rsqrt's derivative underflows for v > ~2e25",
            applies=rsqrt_jvp_underflows_in_float32,
            example=lambda norm=norm, example=example: (
                Case(norm, *example, "large", cotangent=np.array([0.7, 0.3, 0.3]).reshape(example[0].shape)),
                "float64",
            ),
            shows_in="gradient",
            model=RSQRT_HELD,
        )
        for name in ("keras[jax]", "keras[torch]")
        for norm in ("layer_norm", "rms_norm", "group_norm", "batch_norm")
        # Keras' torch backend hands trailing axes to F.layer_norm, whose backward is exact here: use others
        for example in (
            [HUGE_ROW.reshape(3, 1, 1), {"axes": (0, 2), "eps": 1e-12}]
            if norm == "layer_norm"
            else RSQRT_EXAMPLES[norm],
        )
    ),
    Divergence(
        adapters="keras[tensorflow]",
        norm="group_norm",
        clause="LN.D10",
        reason="TF's RsqrtGrad, -dy*y^3/2, underflows in float32 for v > ~2e25",
        applies=rsqrt_jvp_underflows,
        example=lambda: (
            Case(
                "group_norm",
                np.array(
                    [
                        [
                            [
                                1.4220007074850406e17,
                                1.4181626044502508e18,
                                1.0295566435677635e18,
                                -1.6208742031441265e18,
                            ],
                            [
                                1.1649953792304087e18,
                                -1.520324964295639e18,
                                7.485851744631521e17,
                                -1.0572333441037107e18,
                            ],
                        ]
                    ]
                ),
                {
                    "groups": 1,
                    "channel_axis": 1,
                    "eps": 1e-12,
                    "scale": np.array([-0.7522706389427185, 0.11860664188861847]),
                    "offset": np.array([0.5206981301307678, 0.1494448333978653]),
                },
                "large",
                cotangent=np.array(
                    [
                        [
                            [
                                0.3645724058151245,
                                0.2941325008869171,
                                0.028422242030501366,
                                0.5467129945755005,
                            ],
                            [
                                -0.7364540696144104,
                                -0.16290995478630066,
                                -0.4821193218231201,
                                0.5988461971282959,
                            ],
                        ]
                    ]
                ),
            ),
            "float32",
        ),
        shows_in="gradient",
        model=RSQRT_HELD,
    ),
    *(
        Divergence(
            adapters=name,
            norm="lp_normalize",
            clause="LN.D10",
            reason="Keras differentiates rsqrt(sum x^2) in the input dtype: "
            "rsqrt(v)/v under- or subflows for large v",
            applies=rsqrt_of_square_sum_underflows,
            example=lambda example=example: example,
            shows_in="gradient",
            model=LP_RSQRT_HELD,
            indistinguishable={
                "scaled_gradient": "in float16, 1/norm^3 among the subnormals keeps a few bits: the "
                "projection term is off by up to half a subnormal spacing times |x (x.g)| - 40 % of dx "
                "on the example (norm 173), more than the 10 % perturbation"
            }
            if name == "keras[jax]"
            else {},
        )
        for name, example in (
            (
                "keras[jax]",
                (
                    Case(
                        "lp_normalize",
                        np.array([100.125, 99.875, 100.625]),
                        {"axes": (0,), "p": 2.0, "eps_placement": "max_norm", "eps": 1e-12},
                        "offset",
                        cotangent=np.array([0.125732421875, -0.132080078125, 0.640625]),
                    ),
                    "float16",
                ),
            ),
            (
                "keras[torch]",
                (
                    Case(
                        "lp_normalize",
                        HUGE_ROW.reshape(-1),
                        {"axes": (0,), "p": 2.0, "eps_placement": "max_norm", "eps": 1e-12},
                        "large",
                        cotangent=np.array([0.1257302165031433, -0.13210485875606537, 0.6404226422309875]),
                    ),
                    "float32",
                ),
            ),
        )
    ),
    # Keras on TF differentiates tf.math.rsqrt (RsqrtGrad) for every standardizing layer and for
    # UnitNormalization's ops.normalize: the same float32 underflow as its GroupNormalization (LN.D10)
    *(
        Divergence(
            adapters="keras[tensorflow]",
            norm=norm,
            clause="LN.D10",
            reason="TF's RsqrtGrad, -dy*y^3/2, underflows in float32 for v > ~2e25",
            applies=rsqrt_jvp_underflows,
            example=lambda norm=norm, x=x, params=params, g=g: (
                Case(norm, x, params, "large", cotangent=g),
                "float32",
            ),
            shows_in="gradient",
            model=RSQRT_HELD,
        )
        for norm, x, params, g in (
            (
                "batch_norm",
                HUGE_2X3,
                {"channel_axis": 1, "eps": 1e-12, "running_var": "biased", "training": False},
                SMALL_COTANGENT,
            ),
            ("layer_norm", HUGE_2X3, {"axes": (0,), "eps": 1e-12}, SMALL_COTANGENT),
            (
                "rms_norm",
                np.array(
                    [
                        [
                            [3.443006588049162e17, 1.1787756959002788e18, 4.3824550926247526e17],
                            [-1.8627761071036826e17, -1.2481824361231155e17, -7.160974920803942e17],
                            [1.0370656895101829e18, 1.1239236721306501e18, 8.03800518106284e17],
                            [1.1649254228030915e18, 4.617789063875789e17, -7.087771498210918e17],
                            [8.833133507363471e17, 7.366934751724175e17, 2.0683299777150976e17],
                        ]
                    ]
                ),
                {"axes": (0, 1, 2), "eps": 1e-12},
                np.array(
                    [
                        [
                            [-0.5015294551849365, -0.2821129262447357, -0.47814905643463135],
                            [-1.6602836847305298, 0.6462036967277527, -0.1277744621038437],
                            [-1.2871307134628296, 0.20206326246261597, 0.5188384652137756],
                            [-0.2968858778476715, 1.8651530742645264, -0.05999547243118286],
                            [-0.14610053598880768, 0.840681791305542, -0.1843334585428238],
                        ]
                    ]
                ),
            ),
        )
    ),
    Divergence(
        adapters="keras[tensorflow]",
        norm="lp_normalize",
        clause="LN.D10",
        reason=(
            "Keras differentiates rsqrt(sum x^2) in the input dtype: rsqrt(v)/v under- or subflows for "
            "large v"
        ),
        applies=rsqrt_of_square_sum_underflows,
        example=lambda: (
            Case(
                "lp_normalize",
                np.array([2.3003341810806292e18, -2.3929039891684393e18, -1.94159281143441e18]),
                {"axes": (0,), "p": 2.0, "eps_placement": "max_norm", "eps": 1e-12},
                "large",
                cotangent=SMALL_COTANGENT[0].copy(),
            ),
            "float32",
        ),
        shows_in="gradient",
        model=LP_RSQRT_HELD,
    ),
]
