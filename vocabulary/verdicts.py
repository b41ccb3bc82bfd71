"""The names of verdicts and of kinds of expected divergence, which the suite writes and the reports
read."""

# worst first: a cell shows the worst verdict of its results
SEVERITY = [
    "error",
    "protocol error",
    "crashed",
    "timed out",
    "finding",
    "expected divergence",
    "pass",
    "unsupported",
    "skipped",
    "interrupted",
]
PROBLEMS = ("error", "protocol error", "crashed", "timed out", "finding")  # verdicts that fail a run
# the kinds of expected divergence a cell may hold beside its worst verdict, with their matrix letters:
# semantic (differs in exact arithmetic), precision (low precision or ill-conditioned inputs only), special
# values (NaN, inf, empty or degenerate inputs); a record written before kinds were recorded is "divergence";
# and B first where one of them is a framework bug, not a convention (NUM.L6)
KINDS = {"bug": "B", "semantic": "S", "precision": "P", "special": "V", "divergence": "D"}
