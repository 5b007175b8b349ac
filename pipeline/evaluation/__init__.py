"""Evaluation (SPEC.md "Evaluation"): the paper's Tables 1, 2 and 4 and AudioSAE's analyses, one module each.

matching.py (Table 1's metrics), table1.py, ablation.py (Table 4), human.py (Table 2), stability.py,
domains.py, probing.py (top-k probing and unlearning); context.py holds their shared inputs and run.py
computes them all (`ard evaluate`).
"""
